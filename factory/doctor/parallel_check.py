"""The doctor's parallel check: two processes under torchrun reproduce the single-process logits at TP=2, EP=2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from factory.doctor.checks import CheckFailed, CheckSkipped, DoctorContext
from factory.runtime.runtime import cuda_device_count

PROCESSES = 2
TIMEOUT_SECONDS = 600


def _package_root() -> str:
    import factory

    return str(Path(factory.__file__).resolve().parents[1])


def tensor_expert_parallel(context: DoctorContext) -> str:
    """Launch factory.doctor.parallel_worker on 2 ranks (gloo on CPU, NCCL on 2 GPUs) and bound its differences."""
    found = cuda_device_count()
    if context.shapes.device == "cuda" and found < PROCESSES:
        raise CheckSkipped(f"needs {PROCESSES} CUDA devices, found {found}")
    out = context.work_dir / "parallel"
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(PROCESSES),
               "-m", "factory.doctor.parallel_worker", context.tier, str(out)]
    path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "Error" in line] or proc.stderr.splitlines()[-1:]
        raise CheckFailed(f"torchrun exited {proc.returncode}: {errors[-1] if errors else 'no output'}"[:300])
    result = json.loads((out / "result.json").read_text())
    figures, bad = [], []
    for mode, row in result.items():
        figures.append(f"{mode}=2: max |dlogits| {row['max_abs_logit_diff']:.3g}, "
                       f"{row['local_params']:,}/{row['unsharded_params']:,} parameters per rank")
        if not row["max_abs_logit_diff"] <= context.shapes.logit_tolerance:
            bad.append(f"{mode}=2 differs by more than {context.shapes.logit_tolerance:g}")
        if not row["local_params"] < row["unsharded_params"]:
            bad.append(f"{mode}=2 is not sharded")
    figure = "; ".join(figures)
    if bad:
        raise CheckFailed(f"{figure} ({'; '.join(bad)})")
    return figure
