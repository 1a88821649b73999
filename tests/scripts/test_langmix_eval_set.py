"""The language-mixing evaluation set generator on a small unpacked-package tree built from a fixture page."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))

from langmix_eval_set import CLEAN_KINDS, MIXED_KINDS, generate, in_half  # noqa: E402
from langmix_halves import CHINESE_TEXTS, FORTUNES, HALVES, UNSEEN, UNSEEN_DOCS, WORD_LISTS  # noqa: E402
from langmix_sources import dictionary_words  # noqa: E402
from langmix_unseen import CLEAN as UNSEEN_CLEAN  # noqa: E402
from langmix_unseen import MIXED as UNSEEN_MIXED  # noqa: E402
from langmix_unseen import generate as generate_unseen  # noqa: E402
from langmix_unseen import romaji  # noqa: E402

PAGE = Path(__file__).parent / "fixtures" / "langmix_page.html"
ALPHABETS = {
    "latin": "abcdefghijklmnoprstuvwyząęłóśżćřěščž", "cyrillic": "абвгдежзиклмнопрстуфхцчшыэюя",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω", "hangul": "가나다라마바사아자차카타파하서울설정",
    "thai": "กขคงจฉชซญดตถทนบปผพฟมยรลวสหอฮ", "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשת", "devanagari": "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह",
}
SENTENCE = "%\nthe quick brown fox jumps over the lazy dog again.\n%\nein zweiter Satz mit mehreren Wörtern hier.\n"


def _words(script: str, count: int = 60) -> list[str]:
    letters = ALPHABETS[script]
    return [letters[i % len(letters)] + letters[(i * 7 + 3) % len(letters)] + letters[(i * 5 + 1) % len(letters)]
            + letters[(i * 3 + 2) % len(letters)] for i in range(count)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packages")
    for half in HALVES.values():
        for package in half.docs:
            (root / package).mkdir()
            shutil.copy(PAGE, root / package / "index.html")
    code = "<pre>\nvalue = os.path.join(base_dir, name)\nresult = get_user_name()\n</pre></body>"
    for package in UNSEEN_DOCS:  # pages of both parities: the unseen halves split a package page by page
        (root / package).mkdir()
        for name in ("index.html", "a.html"):
            (root / package / name).write_text(PAGE.read_text(encoding="utf-8").replace("</body>", code),
                                               encoding="utf-8")
    for lang, (script, path) in WORD_LISTS.items():
        if script == "han":
            continue
        words = _words(script)
        words += [w.capitalize() + "ł" for w in words[:20]] if script == "latin" else []
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("\n".join(words) + "\n", encoding="utf-8")
    for path in CHINESE_TEXTS:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("我们这说问题关开东车马鸟书语们这说问题关开东车马鸟书语\n" * 3, encoding="utf-8")
    for half in [*HALVES.values(), *UNSEEN.values()]:
        for files in half.sentences.values():
            for name in files:
                path = root / FORTUNES / (name + "cookies" if name.endswith("/") else name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(SENTENCE, encoding="utf-8")
    return root


@pytest.mark.parametrize("half", sorted(HALVES))
def test_every_kind_is_generated_deterministically(root, half):
    records = generate(root, HALVES[half], seed=0, per_kind=2)
    assert records == generate(root, HALVES[half], seed=0, per_kind=2)
    assert [r["kind"] for r in records] == [k for k in MIXED_KINDS + CLEAN_KINDS for _ in range(2)]
    assert all(r["mixed"] == (r["kind"] in MIXED_KINDS) and r["half"] == half for r in records)
    for r in records:
        parts = r["inserted"].split(" | ") if r["kind"] == "fragments" else [r["inserted"]]
        assert all(part in r["text"] for part in parts), r
    page = PAGE.read_text(encoding="utf-8")
    assert all(r["inserted"] == "" and r["text"][:6] in page for r in records if r["kind"] in ("clean", "technical"))


def test_single_word_splices_have_no_spaces(root):
    for r in generate(root, HALVES["heldout"], seed=0, per_kind=2):
        if r["kind"].startswith("word_"):
            start = r["text"].index(r["inserted"])
            assert r["text"][start - 1:start] != " " and r["text"][start + len(r["inserted"]):][:1] != " "


def test_the_halves_share_no_word():
    words = ["szybko", "casa", "привет", "hello", "설정", "们的"]
    assert all(in_half(w, HALVES["tune"]) != in_half(w, HALVES["heldout"]) for w in words)
    assert not set(HALVES["tune"].docs) & set(HALVES["heldout"].docs)


@pytest.mark.parametrize("half", sorted(UNSEEN))
def test_the_unseen_halves_make_the_hard_kinds(root, half):
    records = generate_unseen(root, half, seed=0, per_kind=2)
    assert records == generate_unseen(root, half, seed=0, per_kind=2)
    assert [r["kind"] for r in records] == [k for k in UNSEEN_MIXED + UNSEEN_CLEAN for _ in range(2)]
    by_kind = {kind: [r for r in records if r["kind"] == kind] for kind in UNSEEN_MIXED + UNSEEN_CLEAN}
    assert all(r["inserted"] in r["text"] and r["inserted"] for r in by_kind["word_boundary"])
    assert all(any(i in r["inserted"] for i in ("os.path.join", "get_user_name()", "base_dir"))
               for r in by_kind["identifier"])
    glosses = [r["inserted"].strip(" ()（）") for r in by_kind["gloss_romaji"]]
    assert glosses and all(re.fullmatch("[A-Za-zāēīōū]+", g) for g in glosses), glosses


def test_a_trial_set_samples_each_word_list_evenly(tmp_path):
    # Capitals sort first in some lists (american-english): its first lines alone would have no lower-case word.
    words = [f"{'W' if i < 50 else 'w'}ort{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(100)]
    path = tmp_path / "words"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    assert dictionary_words(path) == tuple(sorted(words))
    assert dictionary_words(path, 10) == tuple(sorted(words[::10]))


def test_romaji_writes_hepburn_with_or_without_macrons():
    assert [romaji(k, True) for k in ("トウキョウ", "ガッコウ", "シャシン", "コンピューター")] == \
        ["tōkyō", "gakkō", "shashin", "konpyūtā"]
    assert romaji("トウキョウ", False) == "tokyo"
