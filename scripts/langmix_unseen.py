"""Language-mixing evaluation set from Japanese the detector was never tuned on, with the hard kinds.

Usage: python scripts/langmix_unseen.py ROOT OUT_DIR [--seed 0] [--per-kind 40]
ROOT as for scripts/langmix_eval_set.py (scripts/fetch_langmix_text.sh downloads these packages too); writes
OUT_DIR/unseen_tune.jsonl and OUT_DIR/unseen_heldout.jsonl, the two halves of langmix_halves.UNSEEN (the same
packages split page by page). Besides the kinds of langmix_eval_set.py it makes the hard ones:
`word_boundary` (a foreign word glued without spaces between two Japanese words, not inside one: any script,
any language but English), `gloss_romaji` (a Japanese word followed by its romanization: 東京（Tokyo）,
学習 (gakushū)), `identifier` (code identifiers of the half's own code blocks inline, glued or spaced) and
`product` (capitalized and CamelCase names of the half's own text glued into other paragraphs).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from langmix_eval_set import LATIN_TOKEN, Generator, Positions, load, splice
from langmix_halves import UNSEEN

MIXED = ("word_latin", "word_boundary", "word_script", "salad_mixed", "fragments", "sentence")
CLEAN = ("clean", "technical", "names", "gloss", "gloss_romaji", "identifier", "product")
_IDENTIFIER = re.compile(r"\b(?:[A-Za-z_]\w*(?:(?:\.|::|->)[A-Za-z_]\w*)+(?:\(\))?|[a-z]+_[a-z_0-9]+|"
                         r"[a-z]+[A-Z]\w+|[A-Z_]{2,}_[A-Z_0-9]+|[a-z_]\w*\(\))")
_PRODUCT = re.compile(r"(?<![\w./-])(?:[A-Z][a-z]+[A-Z][A-Za-z]*|[A-Z][a-z]{3,})(?![\w./-])")
_KANJI_OR_KATAKANA = re.compile(r"^[\u30a1-\u30fa\u30fc\u4e00-\u9fff]{2,}$")
IDENTIFIER_TEMPLATES = {0: ("{id}を", "関数 {id} は", "{id}が"), 1: ("{id} の値", "{id}に", "`{id}` を")}
PRODUCT_TEMPLATES = {0: ("{name}で", "{name} を使って", "{name}版の"), 1: ("{name}上で", "{name}の", "{name} 用の")}
ROMAJI_TEMPLATES = {0: ("（{r}）", "（{R}）"), 1: (" ({r})", "({R})", "（{r}）")}

_KANA = dict(zip(
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
    "ガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポ",
    "a i u e o ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no ha hi fu he ho ma mi mu me mo "
    "ya yu yo ra ri ru re ro wa o n ga gi gu ge go za ji zu ze zo da ji zu de do ba bi bu be bo pa pi pu pe po"
    .split()))
_SMALL = {"ャ": "ya", "ュ": "yu", "ョ": "yo"}


def romaji(kana: str, macrons: bool) -> str:
    """Hepburn romanization of a katakana reading; long vowels as macrons (Tōkyō) or dropped (Tokyo)."""
    out = ""
    for i, c in enumerate(kana):
        if c in _SMALL and out.endswith("i"):  # キャ kya, シャ sha, ジョ jo
            out = out[:-1] + (_SMALL[c][-1] if out.endswith(("shi", "chi", "ji")) else _SMALL[c])
        elif c == "ッ" and i + 1 < len(kana):
            out += _KANA.get(kana[i + 1], "t")[0]
        elif c == "ー" and out:
            out += out[-1]
        else:
            out += _KANA.get(c, "")
    for pair, long in (("ou", "ō"), ("oo", "ō"), ("uu", "ū"), ("aa", "ā"), ("ee", "ē"), ("ii", "ii")):
        out = out.replace(pair, long if macrons else pair[0])
    return out


class UnseenGenerator(Generator):
    """langmix_eval_set's generator plus the hard kinds."""

    def mixed(self, kind: str, text: str, rng: random.Random) -> tuple[str, str]:
        if kind == "word_script":
            kind = f"word_{rng.choice(sorted(self.half.scripts))}"
        if kind != "word_boundary":
            return super().mixed(kind, text, rng)
        langs = [lang for lang in self.half.latin if lang != "en"] + [
            lang for langs in self.half.scripts.values() for lang in langs]
        insert = self.word(rng, rng.choice(langs))
        where = rng.choice(["before_particle", "after_particle"])
        return splice(text, rng.choice(self.positions.find(text, where)), insert), insert

    def clean(self, kind: str, text: str, rng: random.Random) -> tuple[str, str]:
        index = self.half.index
        if kind == "gloss_romaji":
            return self._romaji(text, rng)
        if kind == "identifier":
            insert = rng.choice(IDENTIFIER_TEMPLATES[index]).format(id=rng.choice(self.identifiers))
        elif kind == "product":
            insert = rng.choice(PRODUCT_TEMPLATES[index]).format(name=rng.choice(self.products))
        else:
            return super().clean(kind, text, rng)
        return splice(text, rng.choice(self.positions.find(text, "after_particle")), insert), insert

    def _romaji(self, text: str, rng: random.Random) -> tuple[str, str]:
        nouns = [(node, text.find(node.surface)) for node in self.positions.tagger(text)
                 if node.feature.pos1 == "名詞" and _KANJI_OR_KATAKANA.match(node.surface) and node.feature.kana]
        nouns = [(node, start) for node, start in nouns if start >= 0]
        if not nouns:
            return text, ""
        node, start = rng.choice(nouns)
        macrons = rng.random() < 0.5
        reading = romaji(node.feature.kana, macrons)
        gloss = rng.choice(ROMAJI_TEMPLATES[self.half.index]).format(r=reading, R=reading.capitalize())
        return splice(text, start + len(node.surface), gloss), gloss

    @property
    def identifiers(self) -> list[str]:
        return sorted({m for block in self.material.code for m in _IDENTIFIER.findall(block) if len(m) >= 4})

    @property
    def products(self) -> list[str]:
        return sorted({m for _, text in self.material.paragraphs for m in _PRODUCT.findall(text)})


def generate(root: Path, half_name: str, seed: int, per_kind: int) -> list[dict]:
    half = UNSEEN[half_name]
    material = load(root, half)
    generator = UnseenGenerator(half, material, Positions())
    clean = [(s, t) for s, t in material.paragraphs if len(LATIN_TOKEN.findall(t)) <= 4]
    technical = [(s, t) for s, t in material.paragraphs if len(LATIN_TOKEN.findall(t)) >= 5]
    records = []
    for kind in MIXED + CLEAN:
        rng = random.Random(f"{seed}-{half.name}-{kind}")
        pool = technical if kind == "technical" else clean if kind in CLEAN else material.paragraphs
        for i, (source, text) in enumerate(rng.sample(pool, per_kind)):
            out, inserted = (generator.mixed if kind in MIXED else generator.clean)(kind, text, rng)
            records.append({"id": f"{half.name}-{kind}-{i}", "half": half.name, "kind": kind, "mixed": kind in MIXED,
                            "text": out, "inserted": inserted, "source": source})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder the Debian packages were unpacked into")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=40)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in UNSEEN:
        records = generate(args.root, name, args.seed, args.per_kind)
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        print(f"{args.out / name}.jsonl: {len(records)} documents")


if __name__ == "__main__":
    main()
