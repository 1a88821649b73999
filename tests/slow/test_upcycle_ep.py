"""Two gloo processes: an upcycled checkpoint (written in a world of one) loads at EP=2 and equals the dense model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
_RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("section", [dict(mode="copy"), dict(mode="granular", granularity=2)],
                         ids=["copy", "granular"])
def test_upcycled_checkpoint_at_ep2_equals_dense(tmp_path, section):
    from tests.upcycle.conftest import run_upcycle, save_dense

    dense = save_dense(tmp_path / "dense")
    run_upcycle(tmp_path, dense, **section)
    moe = tmp_path / "upcycle" / "checkpoints"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/upcycle_worker.py"), str(dense), str(moe), str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["params_ep2"] < result["params_ep1"]  # half the experts per rank
    assert result["ep1"] <= 1e-5 and result["ep2"] <= 1e-5
