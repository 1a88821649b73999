"""The memory plan against measured peaks: real training steps at several layouts, in one plain process (the
runtime's world of one) and in 2 gloo ranks under torchrun; each layout in fresh processes (an earlier layout in
the same process would lower the next one's measured peak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MOE = ["model.moe.num_experts=4", "model.moe.router_topk=2", "model.moe.token_dispatcher=allgather"]
LAYOUTS = [  # (processes, overrides): held-out from the per-layer terms, which were measured in one process
    (1, []),
    (1, ["pretrain.recompute=full"]),
    (1, ["model.attention=local"]),
    (1, ["model.attention=local", "pretrain.recompute=selective"]),
    (2, ["parallel.tensor=2"]),
    (2, ["parallel.pipeline=2"]),
    (2, [*MOE, "parallel.expert=2"]),
    (2, ["pretrain.z_loss_coeff=1e-4"]),
    (2, ["pretrain.micro_batch_size=2", "model.num_layers=6"]),
]


@pytest.mark.parametrize("processes,overrides", LAYOUTS, ids=[" ".join(o) or "tp1" for _, o in LAYOUTS])
def test_the_estimate_is_within_15_percent_of_the_measured_peak(processes, overrides, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    launcher = torchrun if processes > 1 else []
    cmd = [sys.executable, *launcher, str(ROOT / "scripts" / "measure_training_memory.py"), "--out", str(tmp_path),
           *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank-*.json"))]
    assert len(ranks) == processes
    for rank in ranks:
        error = rank["estimate"] / rank["measured"] - 1
        assert rank["measured"] > 100 * 2**20, rank  # the model's memory, not the process's noise
        assert abs(error) <= 0.15, f"rank {rank['rank']} {rank['layout']}: {error:+.1%} ({rank['parts']})"
