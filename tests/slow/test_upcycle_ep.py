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
SECTIONS = {"copy": dict(mode="copy"), "granular": dict(mode="granular", granularity=2)}


@pytest.fixture(scope="module")
def loaded_at_ep2(tmp_path_factory) -> Path:
    """<folder>/<section id>/result.json: one dense checkpoint upcycled with each section (in this process), then
    every upcycled checkpoint loaded at EP=1 and EP=2 by one torchrun (tests/slow/upcycle_worker.py)."""
    from tests.upcycle.conftest import run_upcycle, save_dense

    root = tmp_path_factory.mktemp("upcycle-ep")
    dense = save_dense(root / "dense")
    for name, section in SECTIONS.items():
        run_upcycle(root / name, dense, **section)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/upcycle_worker.py"), str(dense), *(str(root / name) for name in SECTIONS)]
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


@pytest.mark.parametrize("section", list(SECTIONS))
def test_upcycled_checkpoint_at_ep2_equals_dense(loaded_at_ep2, section):
    result = json.loads((loaded_at_ep2 / section / "result.json").read_text())
    assert result["params_ep2"] < result["params_ep1"]  # half the experts per rank
    assert result["ep1"] <= 1e-5 and result["ep2"] <= 1e-5
