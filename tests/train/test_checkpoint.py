"""Checkpoint saves start no helper process, so a stop signal to the process group cannot break them."""

from __future__ import annotations

import psutil

from factory.runner import run_stage
from factory.registry import STAGES
from factory.train import checkpoint as ckpt
from tests.train.conftest import train_config


def test_saves_leave_no_child_process(packed_data, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2,
                                                            checkpoint={"save_interval": 1}))
    assert ckpt.latest_iteration(tmp_path / "pretrain" / "checkpoints") == 2
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert started == [], [p.cmdline() for p in started]
