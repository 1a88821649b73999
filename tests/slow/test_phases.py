"""Multi-phase training: a run switches blend phases at a token count, and a SIGKILL on either side of the
switch resumes bit-identically (subprocesses, as a user runs the stage)."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from factory.config import validate_config
from factory.records import read_jsonl
from factory.registry import STAGES
from factory.runner import run_stage
from tests.slow.test_train_processes import ENV, ROOT, _kill_when, _run, _stage, _write
from tests.train.conftest import losses, packed_data, train_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
TOKENS_PER_ITER = 4 * 32  # global batch 4 x seq 32


@pytest.fixture(scope="module")
def second_blend(packed_data, tmp_path_factory):  # noqa: F811
    """Another packed dataset (other text) in its own blend file, phase 'synthetic'."""
    root = tmp_path_factory.mktemp("synthetic")
    docs = root / "synthetic.jsonl"
    docs.write_text("".join(json.dumps({"text": f"合成文書{i}: データは多様性が大切です。" * (1 + i % 4)},
                                       ensure_ascii=False) + "\n" for i in range(200)), encoding="utf-8")
    cfg = validate_config({"run": {"name": "s", "dir": str(root)},
                           "pack": {"datasets": [{"name": "synthetic", "path": str(docs)}], "num_workers": 1,
                                    "tokenizer_dir": str(packed_data / "tokenizer")},
                           "blend": {"phases": [{"name": "synthetic",
                                                 "datasets": [{"dataset": "synthetic", "weight": 1}]}]}})
    run_stage(STAGES["pack"], cfg)
    return root / "pack" / "blend.json"


def _config(packed, second, run_dir, **train):
    phases = [{"phase": "main", "until_tokens": 3 * TOKENS_PER_ITER}, {"blend_file": str(second)}]
    return train_config(packed, run_dir, train_iters=6, phases=phases, **train)


@pytest.fixture(scope="module")
def uninterrupted(packed_data, second_blend, tmp_path_factory):  # noqa: F811
    """The two-phase run straight through, and the same run on the first phase alone (both kill cases compare
    with them): their run folders. References, run in this process."""
    root = tmp_path_factory.mktemp("uninterrupted")
    run_stage(STAGES["pretrain"], _config(packed_data, second_blend, root / "straight"))
    run_stage(STAGES["pretrain"], train_config(packed_data, root / "one", train_iters=6))
    return root / "straight", root / "one"


@pytest.mark.parametrize("kill_after", [2, 4], ids=["before-the-switch", "after-the-switch"])
def test_phase_switch_then_sigkill_on_either_side_resumes_bit_identically(packed_data, second_blend, uninterrupted,
                                                                         tmp_path, kill_after):
    straight, first_phase_only = uninterrupted
    records = read_jsonl(straight / "pretrain" / "metrics.jsonl")
    assert [r["phase"] for r in records] == ["main"] * 3 + ["synthetic"] * 3
    one = losses(first_phase_only)  # the same run on the first phase alone: equal until the switch, then not
    assert one[:3] == losses(straight)[:3] and one[3] != losses(straight)[3]
    config = _write(_config(packed_data, second_blend, tmp_path / "killed", checkpoint={"save_interval": 1}),
                    tmp_path / "b.yaml")
    proc = subprocess.Popen(_stage(config), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _kill_when(proc, tmp_path / "killed/pretrain/metrics.jsonl", kill_after, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill at step {kill_after}"
    _run(_stage(config))
    assert losses(tmp_path / "killed") == losses(straight)
    info = json.loads((tmp_path / "killed" / "pretrain" / "manifest.json").read_text())
    assert info["metrics"]["steps"] == 6
