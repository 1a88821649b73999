"""Background saves: the same run and checkpoints as synchronous saves, committed at a later step, no helper
process, and the final save is the run's own last iteration."""

from __future__ import annotations

import logging

import psutil

from factory.registry import STAGES
from factory.runner import run_stage
from factory.train import checkpoint as ckpt
from factory.train import integrity
from tests.train.conftest import losses, train_config


def test_background_saves_train_and_save_what_synchronous_saves_do(packed_data, tmp_path, caplog):
    checkpoint = {"save_interval": 1, "keep_last": 3}
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path / "sync", train_iters=5, checkpoint=checkpoint))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with caplog.at_level(logging.INFO, logger="factory.train.checkpoint"):
        run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path / "async", train_iters=5,
                                                    checkpoint={**checkpoint, "async_save": True}))
    assert [p for p in psutil.Process().children(recursive=True) if p.pid not in before] == []
    assert losses(tmp_path / "async") == losses(tmp_path / "sync")
    root, sync_root = tmp_path / "async/pretrain/checkpoints", tmp_path / "sync/pretrain/checkpoints"
    assert ckpt.saved_iterations(root) == ckpt.saved_iterations(sync_root) == [3, 4, 5]
    assert ckpt.latest_iteration(root) == 5 and not list(root.glob(".*"))
    for it in (3, 4, 5):
        folder = ckpt.iteration_dir(root, it)
        assert integrity.problems(folder) == []
        assert ckpt.read_info(folder).meta.consumed_samples == \
            ckpt.read_info(ckpt.iteration_dir(sync_root, it)).meta.consumed_samples
    messages = [r.getMessage() for r in caplog.records]
    assert any("iteration 1:" in m and "(written in the background)" in m for m in messages)
    assert any(m.startswith("checkpoint: iteration 1 committed") for m in messages)
    final = [m for m in messages if m.startswith("checkpoint: iteration 5:")]
    assert final and "background" not in final[0]  # the last save is written before the run ends
