"""Two gloo processes under torchrun: TP=2 and EP=2 reproduce the TP=1 / EP=1 logits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _run_worker(mode: str, tmp_path: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/parallel_worker.py"), mode, str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / "result.json").read_text())


def test_tp2_dense_equals_tp1(tmp_path):
    result = _run_worker("tp", tmp_path)
    assert result["local_params"] < result["ref_params"]  # really sharded
    assert result["max_abs_logit_diff"] <= 1e-5


def test_ep2_moe_equals_ep1(tmp_path):
    result = _run_worker("ep", tmp_path)
    assert result["local_params"] < result["ref_params"]  # half the experts per rank
    assert result["max_abs_logit_diff"] <= 1e-5
