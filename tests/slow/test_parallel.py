"""Two gloo processes under torchrun: TP=2 and EP=2 reproduce the TP=1 / EP=1 logits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """<folder>/{tp,ep}/result.json, written by one torchrun of tests/slow/parallel_worker.py."""
    out = tmp_path_factory.mktemp("parallel")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/parallel_worker.py"), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _result(results: Path, mode: str) -> dict:
    return json.loads((results / mode / "result.json").read_text())


def test_tp2_dense_equals_tp1(results):
    result = _result(results, "tp")
    assert result["local_params"] < result["ref_params"]  # really sharded
    assert result["max_abs_logit_diff"] <= 1e-5


def test_ep2_moe_equals_ep1(results):
    result = _result(results, "ep")
    assert result["local_params"] < result["ref_params"]  # half the experts per rank
    assert result["max_abs_logit_diff"] <= 1e-5
