"""Shared fixtures: a mixed Japanese/English corpus built from the fixture text, and trained tokenizers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from factory.config import validate_config
from factory.runner import run_stage
from factory.registry import STAGES

FIXTURE = Path(__file__).parent / "fixtures" / "mixed_ja_en.txt"
# Tricky text the tokenizer must give back exactly: whitespace runs, tabs, newlines, full/half-width forms,
# emoji, digits, the chat tokens.
TRICKY = [
    "  先頭に空白、\t途中にタブ、末尾にも空白  ",
    "Words   with\t\ttabs and    runs of spaces\n次の行\n\n空行の後",
    "全角ＡＢＣ１２３と半角ABC123、ｶﾀｶﾅとカタカナ、全角スペース　ここ",
    "絵文字😀🎉👍🏽と国旗🇯🇵、合字👨‍👩‍👧",
    "Pi is 3.14159, 2024年4月1日 12:34:56, ¥1,980 / $19.99, 0x7F",
    "<|im_start|>user\n日本の首都は？<|im_end|>\n<|im_start|>assistant\n東京です。<|im_end|>\n",
    "文書A<EOD>文書B",
    "見たことのない字：鬱蘊齟齬、ハングル한국어、Ελληνικά",
]


def fixture_lines() -> list[str]:
    return [line for line in FIXTURE.read_text(encoding="utf-8").split("\n") if line.strip()]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """~230 KB: 1,500 lines, each one to three fixture sentences in random order (fixed seed)."""
    rng = random.Random(0)
    src = fixture_lines()
    lines = ("".join(rng.choice(src) for _ in range(rng.randint(1, 3))) for _ in range(1500))
    path = tmp_path_factory.mktemp("corpus") / "mixed.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def tokenizer_config(inputs: list[Path], out: Path, **options):
    section = {"inputs": [str(p) for p in inputs], "output_dir": str(out), "vocab_size": 1000,
               "character_coverage": 0.98, "heldout_fraction": 0.1, **options}
    return validate_config({"run": {"name": "test", "dir": str(out.parent / "run")}, "tokenizer": section})


def train(inputs: list[Path], out: Path, **options) -> dict:
    """Run the tokenizer stage; returns report.json."""
    run_stage(STAGES["tokenizer"], tokenizer_config(inputs, out, **options))
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def trained(corpus, tmp_path_factory):
    """Train once per option set for the whole session: trained(**options) -> (out_dir, report)."""
    cache: dict[tuple, tuple[Path, dict]] = {}

    def get(**options) -> tuple[Path, dict]:
        key = tuple(sorted(options.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("tok") / "tokenizer"
            cache[key] = (out, train([corpus], out, **options))
        return cache[key]

    return get
