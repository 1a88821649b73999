"""Checkpoints continue at any parallel layout the model allows, on 2 gloo processes (tests/slow/reshard_worker.py).

Dense: DP2, TP2, PP2; MoE: DP2 (EP1), EP2, PP2 (MoE with TP needs Transformer Engine norms, GPU only). Every
ordered pair, the same layout included, as a resume (optimizer state kept) and with fresh optimizer state.
"""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slow.reshard_worker import LAYOUTS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # layouts reduce in other orders; measured differences are <= 2e-7


@pytest.fixture(scope="module")
def matrices(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One torchrun for both models' matrices (each start-up of 2 ranks costs ~10 CPU-s of imports)."""
    out = tmp_path_factory.mktemp("reshard")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/reshard_worker.py"), str(out), *LAYOUTS]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900), out


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_every_layout_pair_resumes_with_the_saved_optimizer_state(kind, matrices):
    proc, out = matrices
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / f"{kind}.json").read_text())
    for source, target in itertools.product(LAYOUTS[kind], repeat=2):
        reference, outcome = result["reference"][source], result[source][target]
        pair = f"{source} -> {target}"
        assert outcome["resume"] == pytest.approx(reference, abs=TOLERANCE), pair
        assert outcome["fresh"][0] == pytest.approx(reference[0], abs=TOLERANCE), pair  # the same weights
        assert abs(outcome["fresh"][1] - reference[1]) > 100 * TOLERANCE, pair  # without the Adam moments
