"""FactoryConfigs for the doctor's checks, made from a tier's shapes (the same validation users' configs get)."""

from __future__ import annotations

import copy
from pathlib import Path

from factory.config import validate_config
from factory.doctor.shapes import Shapes


def model_section(shapes: Shapes, vocab_size: int, moe: bool = False, **overrides) -> dict:
    section = {**copy.deepcopy(shapes.model), "vocab_size": vocab_size, **overrides}
    if moe:
        section["moe"] = {**shapes.moe, **section.get("moe", {})}
    return section


def base(shapes: Shapes, run_dir: Path, vocab_size: int, moe: bool = False, **model_overrides) -> dict:
    return {"run": {"name": "doctor", "dir": str(run_dir)}, "runtime": shapes.runtime(),
            "model": model_section(shapes, vocab_size, moe, **model_overrides)}


def validated(raw: dict):
    return validate_config(raw)


def pretrain(shapes: Shapes, data_dir: Path, run_dir: Path, vocab_size: int, train_iters: int,
             decay_iters: int, save_interval: int, moe: bool = False):
    """A pretrain config over the doctor's blend; `decay_iters` fixed so a split run has the straight run's LR."""
    raw = base(shapes, run_dir, vocab_size, moe)
    raw["pretrain"] = {
        "train_iters": train_iters, "global_batch_size": shapes.global_batch_size,
        "micro_batch_size": shapes.micro_batch_size,
        "optimizer": {"lr": 1e-2 if shapes.device == "cpu" else 3e-4, "min_lr": 1e-3 if shapes.device == "cpu"
                      else 3e-5, "distributed": shapes.distributed_optimizer},
        "schedule": {"style": "cosine", "warmup_iters": 1, "decay_iters": decay_iters},
        "checkpoint": {"save_interval": save_interval, "keep_last": 2}, "tensorboard": False,
        "log_interval": 1, "blend_file": str(data_dir / "pack" / "blend.json"),
        "tokenizer_dir": str(data_dir / "tokenizer")}
    return validated(raw)
