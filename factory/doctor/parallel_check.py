"""The doctor's two-process checks under torchrun: TP=2 and EP=2 reproduce the single-process logits, and a run
saved at DP=2 resumes at TP=2 onto its uninterrupted loss curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from factory.doctor import configs
from factory.doctor.chain_checks import losses
from factory.doctor.checks import CheckFailed, DoctorContext

PROCESSES = 2
TIMEOUT_SECONDS = 600


def _package_root() -> str:
    import factory

    return str(Path(factory.__file__).resolve().parents[1])


def _torchrun(context: DoctorContext, *args: str) -> None:
    """`torchrun --standalone --nproc-per-node 2 ARGS` (gloo on CPU, NCCL on 2 GPUs: the check declares 2 devices,
    which the doctor asks for); a failure is the check's."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(PROCESSES), *args]
    path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if proc.returncode != 0:
        lines = proc.stderr.splitlines()
        # A rank's one-line error (factory.errors.report) names the cause; torchrun's lines say only that it failed.
        reported = [line for line in lines if line.startswith("error: ")]
        errors = reported[:1] or [line for line in lines if "Error" in line] or lines[-1:] or ["no output"]
        raise CheckFailed(f"torchrun exited {proc.returncode}: {errors[-1]}"[:300])


def tensor_expert_parallel(context: DoctorContext) -> str:
    """Launch factory.doctor.parallel_worker on 2 ranks and bound its differences (in the tier's precision)."""
    out = context.work_dir / "parallel"
    out.mkdir(parents=True)
    _torchrun(context, "-m", "factory.doctor.parallel_worker", context.tier, str(out))
    result = json.loads((out / "result.json").read_text())
    tolerance = context.shapes.logit_tolerance_for(context.shapes.precision)
    figures, bad = [], []
    for mode, row in result.items():
        figures.append(f"{mode}=2: max |dlogits| {row['max_abs_logit_diff']:.3g} ({context.shapes.precision}, <= "
                       f"{tolerance:g}), {row['local_params']:,}/{row['unsharded_params']:,} parameters per rank")
        if not row["max_abs_logit_diff"] <= tolerance:
            bad.append(f"{mode}=2 differs by more than {tolerance:g}")
        if not row["local_params"] < row["unsharded_params"]:
            bad.append(f"{mode}=2 is not sharded")
    figure = "; ".join(figures)
    if bad:
        raise CheckFailed(f"{figure} ({'; '.join(bad)})")
    return figure


def resume_other_layout(context: DoctorContext) -> str:
    """pretrain on 2 ranks at DP=2, saved half way and resumed at TP=2 (DP=1), against the same run uninterrupted:
    the optimizer state (sharded over DP by the distributed optimizer on GPUs) is resharded on load."""
    shapes, root = context.shapes, context.artifacts["data"]
    vocab, total, half = context.artifacts["vocab_size"], shapes.train_iters, shapes.train_iters // 2
    straight, split = context.work_dir / "layout-straight", context.work_dir / "layout-split"
    runs = []
    for run_dir, iters, tensor in ((straight, total, 1), (split, half, 1), (split, total, 2)):
        raw = configs.pretrain(shapes, root, run_dir, vocab, iters, total, half).to_dict()
        raw["parallel"]["tensor"] = tensor
        runs.append(run_dir.with_name(f"{run_dir.name}-{iters}.yaml"))
        runs[-1].write_text(yaml.safe_dump(configs.validated(raw).to_dict()))
    # One launch for the three runs: starting two ranks was most of each run's cost. The claim holds as with three
    # launches: each run builds its model, optimizer and data anew, and the resumed run gets the half-way run's
    # state only from its checkpoint, saved at another layout (pretrain_resume's runs share one process too).
    _torchrun(context, "-m", "factory.doctor.stage_runs", "pretrain", *map(str, runs))
    first, second = losses(straight), losses(split)
    if len(first) != total or len(second) != total:
        raise CheckFailed(f"logged {len(first)} and {len(second)} losses, expected {total} each")
    diff = max(abs(a - b) for a, b in zip(first, second))
    optimizer = "distributed" if shapes.distributed_optimizer and shapes.device == "cuda" else "plain"
    figure = (f"DP=2 -> TP=2 at step {half} of {total} ({optimizer} optimizer): max |dloss| {diff:.3g} "
              f"(<= {shapes.layout_resume_tolerance:g})")
    if not diff <= shapes.layout_resume_tolerance:
        raise CheckFailed(figure)
    return figure
