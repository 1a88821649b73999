"""`checkpoint.keep_every_optimizer: false`: iterations kept for keep_every lose their optimizer state, nothing else."""

from __future__ import annotations

import pytest

from factory.errors import CheckpointError
from factory.registry import STAGES
from factory.runner import run_stage
from factory.train import checkpoint as ckpt
from factory.train import integrity
from factory.train.checkpoint_strip import has_optimizer_files
from factory.train.verify_checkpoint import iteration_line
from tests.train.conftest import train_config


def test_kept_iterations_drop_their_optimizer_state_and_still_load(packed_data, tmp_path):
    checkpoint = {"save_interval": 1, "keep_last": 2, "keep_every": 2, "keep_every_optimizer": False}
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=6, checkpoint=checkpoint))
    root = tmp_path / "pretrain" / "checkpoints"
    assert ckpt.saved_iterations(root) == [2, 4, 5, 6] and not list(root.glob(".*"))
    for it, full in ((2, False), (4, False), (5, True), (6, True)):
        folder = ckpt.iteration_dir(root, it)
        assert has_optimizer_files(folder) == full and ckpt.read_info(folder).meta.has_optimizer == full
        assert integrity.problems(folder) == [] and iteration_line(folder)[0]
    kept = ckpt.iteration_dir(root, 4)
    continued = train_config(packed_data, tmp_path / "cpt", stage="cpt", train_iters=2, init_from=str(kept))
    run_stage(STAGES["cpt"], continued)  # the weights, with fresh optimizer state
    keeping = train_config(packed_data, tmp_path / "cpt-keep", stage="cpt", train_iters=2, init_from=str(kept),
                           reset_optimizer=False)
    with pytest.raises(CheckpointError, match=f"{kept}: has no optimizer state to resume from"):
        run_stage(STAGES["cpt"], keeping)
