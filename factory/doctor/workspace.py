"""The doctor's own inputs, made offline: a tiny SentencePiece tokenizer and a packed blend (or a prepared folder)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from factory.config import validate_config
from factory.errors import ConfigError
from factory.hf import tokenizer_files
from factory.registry import STAGES
from factory.runner import run_stage

SENTENCES = [
    "今日は朝から雨が降っていたので、駅まで傘をさして歩きました。", "東京都は日本の首都です。人口は約千四百万人です。",
    "機械学習のモデルを訓練するにはデータが必要です。", "吾輩は猫である。名前はまだ無い。",
    "この町には古い神社がいくつもあり、春になると桜を見に来る人でにぎわいます。",
    "週末は家族と一緒に海へ出かけて、夕方まで砂浜で遊びました。", "図書館で日本の歴史についての本を三冊借りました。",
    "The quick brown fox jumps over the lazy dog.", "Megatron-Core trains large language models on many GPUs.",
    "Sparse upcycling turns a dense model into a mixture of experts.", "A checkpoint is saved every few hundred steps.",
    "今日は良い天気ですね。散歩に行きましょう。", "新しい計算機は二〇二四年に届きました。", "Tokens per second: 12,345.",
]


def write_corpus(path: Path, lines: int, seed: int = 0) -> Path:
    """`lines` lines of one to three sentences in a seeded random order, Japanese and English mixed."""
    rng = random.Random(seed)
    text = "".join("".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 3))) + "\n" for _ in range(lines))
    path.write_text(text, encoding="utf-8")
    return path


def build(root: Path, vocab_size: int, documents: int) -> Path:
    """`root/tokenizer/` (the tokenizer stage's output) and `root/pack/blend.json` (the pack stage's)."""

    root.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(root / "corpus.txt", 600)
    run_stage(STAGES["tokenizer"], validate_config({
        "run": {"name": "doctor", "dir": str(root)},
        "tokenizer": {"inputs": [str(corpus)], "output_dir": str(root / "tokenizer"), "vocab_size": vocab_size,
                      "model_type": "bpe", "character_coverage": 0.98, "heldout_fraction": 0.1}}))
    rng = random.Random(1)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": "".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 8)))},
                                       ensure_ascii=False) + "\n" for _ in range(documents)), encoding="utf-8")
    run_stage(STAGES["pack"], validate_config({
        "run": {"name": "doctor", "dir": str(root)},
        "pack": {"datasets": [{"name": "docs", "path": str(docs)}], "tokenizer_dir": str(root / "tokenizer"),
                 "num_workers": 1},
        "blend": {"phases": [{"name": "main", "datasets": [{"dataset": "docs", "weight": 1}]}]}}))
    return root


def check_prepared(root: Path) -> Path:
    """A `--data DIR` folder must hold what build() writes; one line naming what is missing."""
    missing = [str(root / name) for name in ("tokenizer/tokenizer_config.json", "pack/blend.json")
               if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"--data {root}: missing {', '.join(missing)} (expected the "
                          "tokenizer stage's output in tokenizer/ and the pack stage's in pack/)")
    return root


def tokenizer_size(root: Path) -> int:
    return tokenizer_files.read(root / "tokenizer").size
