"""Run setup without a model: learning-rate resolution and batch arithmetic, each refusal one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.errors import ConfigError
from factory.model.config import ModelConfig
from factory.train.checkpoint import CheckpointInfo
from factory.train.config import TrainConfig
from factory.train.setup import StartPoint, learning_rates, micro_batches_per_rank
from tests.conftest import TINY_DENSE

MODEL = ModelConfig.model_validate(TINY_DENSE["model"])


def _config(**optimizer) -> TrainConfig:
    return TrainConfig.model_validate({"train_iters": 4, "global_batch_size": 4, "micro_batch_size": 2,
                                       "optimizer": optimizer})


def _start(resuming: bool, **meta) -> StartPoint:
    return StartPoint(MODEL, CheckpointInfo(Path("/c/iter_0000004"), 4, MODEL, meta), resuming)


def test_learning_rates_from_config_inherited_or_kept_on_resume():
    assert learning_rates("pretrain", _config(lr=1e-3), StartPoint(MODEL, None, False)) == (1e-3, 1e-4)
    assert learning_rates("cpt", _config(), _start(False, final_lr=2e-5)) == pytest.approx((2e-5, 2e-6))
    assert learning_rates("cpt", _config(lr=9.0), _start(True, peak_lr=1e-3, min_lr=1e-5)) == (1e-3, 1e-5)


def test_learning_rate_refusals_name_the_key():
    with pytest.raises(ConfigError, match="cpt.optimizer.lr: not set, and the starting checkpoint records no"):
        learning_rates("cpt", _config(), _start(False))
    with pytest.raises(ConfigError, match=r"pretrain.optimizer.min_lr=0.1: exceeds the peak LR 0.01"):
        learning_rates("pretrain", _config(lr=1e-2, min_lr=0.1), StartPoint(MODEL, None, False))


def test_micro_batches_per_rank():
    assert micro_batches_per_rank("pretrain", _config(lr=1.0), 1) == 2
    with pytest.raises(ConfigError, match=r"global_batch_size=4: must be divisible by micro_batch_size x "
                                          r"data-parallel size \(2 x 3\)"):
        micro_batches_per_rank("pretrain", _config(lr=1.0), 3)
