"""A run's Slurm chain, `<run.dir>/chain.json`: per stage the job that runs it (id, name, log, the stages it
waits for, why it runs), and the report job. Written when the chain is submitted (factory/launch/chain.py);
read by its jobs, by `factory.launch status`, and by the in-process pipeline, which refuses to run while a job
of the chain is queued or running.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from factory import slurm_queue
from factory.config_base import CoreConfig
from factory.errors import ConfigError, OutputError
from factory.io import atomic_write_json
from factory.run_state import now, records_lock

CHAIN_NAME = "chain.json"
REPORT = "report"
"""The name of the chain's last job, which writes the run report."""


def job_name(cfg: CoreConfig, stage: str) -> str:
    """`<run.name>.<stage>.<6 hex digits of the run folder>`: squeue finds a run's jobs by name, and runs of one
    name in two folders never take each other's jobs for their own."""
    folder = hashlib.sha256(str(cfg.run.dir.resolve()).encode()).hexdigest()[:6]
    return f"{cfg.run.name}.{stage}.{folder}"


def load(run_dir: Path) -> dict[str, Any]:
    """The chain record (`{"jobs": {}}` when none was submitted); one line when it is damaged."""
    path = run_dir / CHAIN_NAME
    if not path.is_file():
        return {"jobs": {}}
    try:
        chain = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e}); move it aside (no job "
                          "or output is touched) and check squeue for the run's jobs") from None
    if not isinstance(chain, dict) or not isinstance(chain.get("jobs"), dict):
        raise ConfigError(f"{path}: expected {{\"jobs\": {{stage: job}}}}; move it aside (no job or output is "
                          "touched) and check squeue for the run's jobs")
    return chain


def update(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the chain record under the run's records lock, and write it; returns it."""
    with records_lock(run_dir):
        chain = load(run_dir)
        change(chain)
        chain["run_dir"] = str(run_dir.resolve())
        atomic_write_json(run_dir / CHAIN_NAME, chain)
    return chain


def entry(run_dir: Path, stage: str) -> dict[str, Any]:
    """The chain's entry for `stage` when it names the Slurm job this process runs in, else `{}`."""
    job = load(run_dir)["jobs"].get(stage, {})
    return job if job.get("job_id") == os.environ.get("SLURM_JOB_ID") else {}


def still_queued(run_dir: Path) -> list[str]:
    """`<stage> (job <id>, <STATE>)` for each job of the run's chain that is pending or running (the job this
    process runs in aside); one OutputError line when chain.json names jobs that no squeue here can check."""
    path, chain = run_dir / CHAIN_NAME, load(run_dir)
    if not chain["jobs"] or chain.get("ended_at") or chain.get("run_dir") != str(run_dir.resolve()):
        return []  # none, all seen ended, or the record of the folder this one was copied from
    stages = {job["job_id"]: stage for stage, job in chain["jobs"].items()}
    if not slurm_queue.available():
        raise OutputError(f"{path}: names Slurm jobs {', '.join(stages)} and there is no squeue here to check "
                          f"them; run this where Slurm is, or move {path.name} aside if those jobs are gone")
    me, found = os.environ.get("SLURM_JOB_ID"), slurm_queue.jobs(list(stages))
    return [f"{stage} (job {i}, {found[i].state})" for i, stage in stages.items()
            if i in found and not found[i].ended and i != me]


def mark_ended(run_dir: Path) -> None:
    """Note that every job of the chain has ended, so hosts without squeue need not check them."""
    update(run_dir, lambda chain: chain.setdefault("ended_at", now()))
