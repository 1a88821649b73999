"""A tiny run folder (SentencePiece tokenizer + packed blend) that training tests share."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from factory.config import FactoryConfig, validate_config
from tests.conftest import TINY_DENSE, TINY_MOE, built_once

TEXTS = ["吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
         "東京都は日本の首都です。人口は約千四百万人です。", "機械学習のモデルを訓練するにはデータが必要です。",
         "The quick brown fox jumps over the lazy dog.", "Megatron-Core trains large language models.",
         "Sparse upcycling turns a dense model into a mixture of experts.",
         "今日は良い天気ですね。散歩に行きましょう。公園の桜がきれいです。"]
VOCAB = 512
TRAIN = {"train_iters": 6, "global_batch_size": 4, "micro_batch_size": 2,
         "optimizer": {"lr": 1e-2, "min_lr": 1e-3}, "schedule": {"style": "cosine", "warmup_iters": 1},
         "checkpoint": {"save_interval": 2, "keep_last": 2}, "tensorboard": False}


@pytest.fixture(scope="session")
def packed_data(tmp_path_factory) -> Path:
    """`<dir>/tokenizer/tokenizer.model` and `<dir>/pack/blend.json` over a few hundred documents; built once per
    test run, also for the test modules elsewhere that import this fixture."""
    return built_once(tmp_path_factory, "packed", _pack)


def _pack(root: Path) -> None:
    import sentencepiece as spm

    from factory.runner import run_stage
    from factory.registry import STAGES

    (root / "tokenizer").mkdir()
    text = root / "train.txt"
    text.write_text("\n".join(TEXTS * 30), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(root / "tokenizer" / "tokenizer"), vocab_size=VOCAB,
        model_type="bpe", hard_vocab_limit=False, user_defined_symbols=["<EOD>"], byte_fallback=True,
        minloglevel=2)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"{i}: " + TEXTS[i % len(TEXTS)] * (1 + i % 3)},
                                       ensure_ascii=False) + "\n" for i in range(300)), encoding="utf-8")
    cfg = validate_config({"run": {"name": "pack", "dir": str(root)},
                           "pack": {"datasets": [{"name": "docs", "path": str(docs)}], "num_workers": 1},
                           "blend": {"phases": [{"name": "main", "datasets": [{"dataset": "docs", "weight": 1}]}]}})
    run_stage(STAGES["pack"], cfg)


def train_config(packed: Path, run_dir: Path, moe: bool = False, stage: str = "pretrain",
                 model: dict | None = None, **train) -> FactoryConfig:
    """A tiny pretrain (or cpt) config reading `packed`, writing under `run_dir`."""
    raw = copy.deepcopy(TINY_MOE if moe else TINY_DENSE)
    raw["run"] = {"name": "t", "dir": str(run_dir)}
    raw["model"].update({"vocab_size": VOCAB, **(model or {})})
    section = copy.deepcopy(TRAIN)
    for key, value in train.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    section.setdefault("blend_file", str(packed / "pack" / "blend.json"))
    section.setdefault("tokenizer_dir", str(packed / "tokenizer"))
    raw[stage] = section
    return validate_config(raw)


def losses(run_dir: Path, stage: str = "pretrain") -> list[float]:
    lines = (run_dir / stage / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]
