"""The language-mixing evaluation set generator on a small unpacked-package tree built from a fixture page."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))

from langmix_eval_set import CLEAN_KINDS, MIXED_KINDS, generate, in_half  # noqa: E402
from langmix_halves import CHINESE_TEXTS, FORTUNES, HALVES, WORD_LISTS  # noqa: E402

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
    for half in HALVES.values():
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
