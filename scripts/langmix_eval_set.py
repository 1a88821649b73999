"""Generate the language-mixing evaluation set: real Japanese paragraphs, spliced or legitimately mixed.

Usage: python scripts/langmix_eval_set.py ROOT OUT_DIR [--seed 0] [--per-kind 100] [--max-pages N] [--max-words N]
ROOT holds the unpacked Debian packages (scripts/fetch_langmix_text.sh: each documentation package in
ROOT/NAME, the word and sentence packages in ROOT itself); writes OUT_DIR/tune.jsonl and
OUT_DIR/heldout.jsonl with {"id", "half", "kind", "mixed", "text", "inserted", "source"} per line. The
same ROOT, seed and count give the same files. Kinds are listed in docs/benchmarks.md. `--max-pages` and
`--max-words` make a quick trial set from the first pages of each package and a sample of each word list
(seconds instead of ~35 s of CPU; not the set docs/benchmarks.md measures).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import fugashi

from langmix_halves import CHINESE_TEXTS, FORTUNES, HALVES, SHISA, UNSEEN, WORD_LISTS, WORD_PACKAGES, Half
from langmix_sources import dictionary_words, fortune_sentences, han_runs, html_pages, japanese_share, parse_html

MIXED_KINDS = ("word_latin", "word_cyrillic", "word_hangul", "word_han", "word_greek", "word_thai",
               "word_arabic", "word_other", "salad_script", "salad_mixed", "salad_ascii", "fragments", "sentence")
CLEAN_KINDS = ("clean", "technical", "names", "greek_math", "gloss", "code", "url")
_ALLOWED = re.compile(r"^[\x20-\x7e\u3000-\u30ff\u3400-\u9fff\uff01-\uff9f\u2010-\u2027\u2190-\u21ff\u2460-\u24ff"
                      r"\u00a0\u00a9\u00ae\u00b0\u00b1\u00d7\u00f7\u2212\u25a0-\u25ff]+$")
_ENGLISH_RUN = re.compile(r"(?:[A-Za-z]+[,.]? ){5,}[A-Za-z]+")
LATIN_TOKEN = re.compile(r"[A-Za-z][\w.+/-]*")
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\u3005]")
_KANA = re.compile(r"^[\u3040-\u30ff]+$")
_KATAKANA = re.compile(r"[\u30a1-\u30fa]")


def in_half(word: str, half: Half) -> bool:
    return zlib.crc32(word.encode()) % 2 == half.index


@dataclass
class Material:
    """What one half's documents and word lists give."""

    paragraphs: list[tuple[str, str]] = field(default_factory=list)
    """(source, paragraph): real Japanese paragraphs without foreign scripts or untranslated sentences."""
    code: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    words: dict[str, list[str]] = field(default_factory=dict)
    sentences: dict[str, list[str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


def load(root: Path, half: Half, max_pages: int | None = None, max_words: int | None = None) -> Material:
    """One half's material; `max_pages` / `max_words`: the first pages of each package / a sample of each list."""
    out = Material()
    seen: set[str] = set()
    for package in half.docs:
        for name, source in itertools.islice(html_pages(root / package), max_pages):
            if half.pages is not None and zlib.crc32(name.encode()) % 2 != half.pages:
                continue
            page = parse_html(source)
            out.code += [c for c in page.code if c.count("\n") < 10 and 10 <= len(c) <= 500]
            out.links += page.links
            for n, text in enumerate(page.paragraphs):
                if text not in seen and _usable(text):
                    seen.add(text)
                    out.paragraphs.append((f"{package}/{name}#{n}", text))
    out.code, out.links = sorted(set(out.code)), sorted(set(out.links))
    languages = set(half.latin) | set(SHISA) | {lang for langs in half.scripts.values() for lang in langs}
    for lang in sorted(languages | set(half.names)):
        words = _chinese_words(root) if lang == "zh" else dictionary_words(root / WORD_LISTS[lang][1], max_words)
        words = [w for w in words if in_half(w, half)]
        out.names += [w for w in words if lang in half.names and w[0].isupper() and not w.isascii()]
        out.words[lang] = [w for w in words if lang == "de" or not w[0].isupper()]
    for lang, files in half.sentences.items():
        paths = [p for f in files for p in (sorted((root / FORTUNES / f).iterdir()) if f.endswith("/")
                                              else [root / FORTUNES / f])]
        out.sentences[lang] = [s for p in paths if p.suffix not in (".dat", ".u8") and p.is_file()
                               for s in fortune_sentences(p)]
    return out


def _usable(text: str) -> bool:
    """A Japanese paragraph (kana in it: a package's Chinese pages have Han alone) without foreign prose."""
    return (40 <= len(text) <= 400 and japanese_share(text) >= 0.5 and bool(_ALLOWED.match(text))
            and len(re.findall(r"[\u3040-\u30ff]", text)) >= 5
            and not _ENGLISH_RUN.search(text) and bool(re.search(r"[。）」\u3040-\u30ff\u4e00-\u9fff]$", text)))


@functools.cache  # both halves use them
def _chinese_words(root: Path) -> tuple[str, ...]:
    """2-4 character pieces of simplified Chinese text with a character outside Japanese use (not in cp932)."""
    words = set()
    for path in CHINESE_TEXTS:
        for run in han_runs(root / path):
            for i in range(0, len(run) - 1, 3):
                piece = run[i:i + 2 + i % 3]
                if any(not _encodes(c, "cp932") for c in piece):
                    words.add(piece)
    return tuple(sorted(words))


def _encodes(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
        return True
    except UnicodeEncodeError:
        return False


class Positions:
    """Splice points of a paragraph from its MeCab morphemes (unidic-lite)."""

    def __init__(self) -> None:
        self.tagger = fugashi.Tagger()

    def morphemes(self, text: str) -> list[tuple[int, int, str]]:
        out, offset = [], 0
        for node in self.tagger(text):
            offset = text.index(node.surface, offset)
            out.append((offset, offset + len(node.surface), node.feature.pos1))
            offset += len(node.surface)
        return out

    def find(self, text: str, where: str) -> list[int]:
        m = self.morphemes(text)
        japanese = [bool(_JAPANESE.fullmatch(text[s:e][:1])) and bool(_JAPANESE.search(text[e - 1:e]))
                    for s, e, _ in m]
        if where == "kana":
            points = [p for (s, e, _) in m if e - s >= 2 and _KANA.match(text[s:e]) for p in range(s + 1, e)]
        elif where == "kanji":
            points = [p for (s, e, _) in m if e - s >= 2 and _JAPANESE.fullmatch(text[s:e][0])
                      and re.search(r"[\u4e00-\u9fff]", text[s:e]) for p in range(s + 1, e)]
            points += [m[i][0] for i in range(1, len(m)) if japanese[i - 1] and japanese[i]
                       and m[i - 1][2] == m[i][2] == "名詞"]
        elif where == "compound":
            points = [m[i][0] for i in range(1, len(m)) if japanese[i - 1] and japanese[i]
                      and m[i - 1][2] == m[i][2] == "名詞" and _KATAKANA.search(text[m[i - 1][0]:m[i][1]])]
        elif where == "before_particle":
            points = [s for i, (s, e, pos) in enumerate(m) if pos == "助詞" and i and japanese[i - 1]]
        elif where == "after_particle":
            points = [e for (s, e, pos) in m if pos == "助詞" or text[s:e] == "、"]
        elif where == "after_noun":
            points = [e for i, (s, e, pos) in enumerate(m) if pos == "名詞" and japanese[i]
                      and (i + 1 == len(m) or m[i + 1][2] != "名詞")]
        elif where == "sentence":
            points = [0] + [i + 1 for i, c in enumerate(text) if c == "。"]
        else:
            raise ValueError(where)
        points = [p for p in sorted(set(points)) if _not_in_ascii_word(text, p)]
        if not points and where in ("compound", "kanji"):
            return self.find(text, "kana")
        return points or [len(text)]


def _not_in_ascii_word(text: str, p: int) -> bool:
    return not any(0 <= i < len(text) and text[i].isascii() and text[i].isalnum() for i in (p - 1, p))


def splice(text: str, point: int, insert: str) -> str:
    return text[:point] + insert + text[point:]


class Generator:
    """Builds one document of a kind for one half from its material."""

    def __init__(self, half: Half, material: Material, positions: Positions) -> None:
        self.half, self.material, self.positions = half, material, positions
        self.script_of = {lang: script for script, langs in half.scripts.items() for lang in langs}

    def word(self, rng: random.Random, lang: str) -> str:
        return rng.choice(self.material.words[lang])

    def salad_words(self, rng: random.Random, langs: list[str], count: int) -> str:
        words = [self.word(rng, rng.choice(langs)) for _ in range(count)]
        glue = "" if all(WORD_LISTS[lang][0] in ("han", "thai") for lang in langs) else " "
        return glue.join(words)

    def mixed(self, kind: str, text: str, rng: random.Random) -> tuple[str, str]:
        half, find = self.half, self.positions.find
        if kind.startswith("word_"):
            script = kind.removeprefix("word_")
            if script == "other":
                script = "hebrew" if "hebrew" in half.scripts else "devanagari"
            langs = half.latin if script == "latin" else half.scripts[script]
            insert = self.word(rng, rng.choice(langs))
            where = rng.choice(half.inside) if len(half.inside) > 1 else half.inside[0]
            return splice(text, rng.choice(find(text, where)), insert), insert
        pad = rng.choice(half.pad)
        if kind == "salad_script":
            langs = list(rng.choice(list(half.scripts.values())))
            insert = self.salad_words(rng, langs, rng.randint(3, 8))
        elif kind == "salad_mixed":
            pool = list(half.latin) + [lang for langs in half.scripts.values() for lang in langs]
            insert = " ".join(self.salad_words(rng, [rng.choice(pool)], rng.randint(1, 2)) for _ in range(4))
        elif kind == "salad_ascii":
            words = [w for lang in half.latin for w in self.material.words[lang][::7] if w.isascii()]
            insert = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        elif kind == "fragments":
            candidates = find(text, half.boundary)
            points = rng.sample(candidates, k=1)
            points += rng.sample(candidates, k=min(rng.randint(1, 3), len(candidates)))
            fragments = []
            for point in sorted(set(points), reverse=True):
                fragment = self.salad_words(rng, [rng.choice(SHISA)], rng.randint(1, 3))
                text, fragments = splice(text, point, f"{pad}{fragment}{pad}"), [fragment] + fragments
            return text, " | ".join(fragments)
        elif kind == "sentence":
            lang = rng.choice(sorted(self.material.sentences))
            insert = rng.choice(self.material.sentences[lang])
            points = find(text, "sentence")
            point = rng.choice(points if half.index == 0 else [max(p - 1, 0) for p in points[1:]] or points)
            return splice(text, point, f"{pad}{insert}{pad}"), insert
        else:
            raise ValueError(kind)
        return splice(text, rng.choice(find(text, half.boundary)), f"{pad}{insert}{pad}"), insert

    def clean(self, kind: str, text: str, rng: random.Random) -> tuple[str, str]:
        half, material, find = self.half, self.material, self.positions.find
        if kind in ("clean", "technical"):
            return text, ""
        if kind == "names":
            name, name2 = (" ".join(rng.sample(material.names, rng.randint(1, 2))) for _ in range(2))
            insert = rng.choice(half.name_templates).format(name=name, name2=name2, year=rng.randint(1700, 1990))
            where = "after_particle"
        elif kind == "greek_math":
            g, h = rng.sample(half.greek, 2)
            insert = rng.choice(half.math_templates).format(g=g, h=h, n=rng.randint(1, 500))
            where = "after_particle"
        elif kind == "gloss":
            langs = [lang for lang in material.words if lang != "de"]
            word, word2 = (self.word(rng, rng.choice(langs)) for _ in range(2))
            insert = rng.choice(half.gloss_templates).format(word=word, word2=word2)
            where = "after_noun"
        elif kind == "code":
            block = rng.choice(material.code)
            glue = rng.choice(["\n", "\n\n"] if half.index == 0 else ["：\n", "\n", "\n\n    "])
            return text + glue + block, block
        elif kind == "url":
            insert = rng.choice(half.url_templates).format(url=rng.choice(material.links))
            where = "sentence" if half.index == 0 else "after_noun"
        else:
            raise ValueError(kind)
        return splice(text, rng.choice(find(text, where)), insert), insert


def generate(root: Path, half: Half, seed: int, per_kind: int, max_pages: int | None = None,
             max_words: int | None = None) -> list[dict]:
    material = load(root, half, max_pages, max_words)
    generator = Generator(half, material, Positions())
    clean = [(s, t) for s, t in material.paragraphs if len(LATIN_TOKEN.findall(t)) <= 4]
    technical = [(s, t) for s, t in material.paragraphs if len(LATIN_TOKEN.findall(t)) >= 5]
    records = []
    for kind in MIXED_KINDS + CLEAN_KINDS:
        rng = random.Random(f"{seed}-{half.name}-{kind}")
        pool = technical if kind == "technical" else clean if kind in CLEAN_KINDS else material.paragraphs
        for i, (source, text) in enumerate(rng.sample(pool, per_kind)):
            build = generator.mixed if kind in MIXED_KINDS else generator.clean
            out, inserted = build(kind, text, rng)
            records.append({"id": f"{half.name}-{kind}-{i}", "half": half.name, "kind": kind,
                            "mixed": kind in MIXED_KINDS, "text": out, "inserted": inserted, "source": source})
    return records


def packages(which: str) -> list[str]:
    """Debian packages to unpack: `docs` each into ROOT/NAME, `words` all into ROOT."""
    halves = [*HALVES.values(), *UNSEEN.values()]
    return sorted({p for half in halves for p in half.docs}) if which == "docs" else list(WORD_PACKAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", help="folder the Debian packages were unpacked into")
    parser.add_argument("out", type=Path, nargs="?", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=100)
    parser.add_argument("--max-pages", type=int, help="read only the first N pages of each documentation package")
    parser.add_argument("--max-words", type=int, help="read at most N lines of each word list, spread evenly")
    parser.add_argument("--list-packages", choices=["docs", "words"], help="print the Debian packages it reads")
    args = parser.parse_args()
    if args.list_packages:
        print(" ".join(packages(args.list_packages)))
        return
    if args.root is None or args.out is None:
        parser.error("ROOT and OUT_DIR are required")
    args.out.mkdir(parents=True, exist_ok=True)
    for half in HALVES.values():
        records = generate(args.root, half, args.seed, args.per_kind, args.max_pages, args.max_words)
        with (args.out / f"{half.name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        print(f"{args.out / half.name}.jsonl: {len(records)} documents")


if __name__ == "__main__":
    main()
