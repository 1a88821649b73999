"""The step loop: evaluation on its own interval (not only on log steps), logged with the step's metrics."""

from __future__ import annotations

from factory.records import read_jsonl
from factory.registry import STAGES
from factory.runner import run_stage
from tests.train.conftest import train_config


def test_evaluation_runs_on_its_own_interval(packed_data, tmp_path):
    cfg = train_config(packed_data, tmp_path, train_iters=6, log_interval=4, eval_interval=3, eval_iters=1,
                       checkpoint={"save_interval": 6})
    run_stage(STAGES["pretrain"], cfg)
    records = read_jsonl(tmp_path / "pretrain" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [3, 4, 6]
    assert [r["iteration"] for r in records if "valid_loss" in r] == [3, 6]
    assert all(r["loss"] > 0 and r["valid_loss"] > 0 for r in records if "valid_loss" in r)
