"""The Slurm client calls of a chain: sbatch with dependencies, squeue by job name or id (sacct for jobs
slurmctld has forgotten), scontrol to change a dependency, scancel. Each runs the command-line client."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from factory.errors import FactoryError

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
"""Job states after which a job runs no more (a requeued job is PENDING again, not ended)."""
FIELDS = ("JobID", "Name", "State", "Reason", "TimeUsed", "RestartCnt")
"""What `squeue -O` reports per job, `|`-separated (`Field:|`: no padding, `|` after each)."""


class SlurmError(FactoryError):
    """A Slurm client is missing or refused a request."""


@dataclass
class Job:
    """One job as Slurm reports it."""

    id: str
    name: str
    state: str
    reason: str = ""
    elapsed: str = ""
    restarts: int | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def available() -> bool:
    """Whether this machine has the Slurm clients (a login or compute node)."""
    return shutil.which("squeue") is not None


def submit(script: str, after: list[str], hold: bool = False) -> str:
    """`sbatch` the script, to start once every job of `after` has completed (and, with `hold`, once
    released); returns the new job's id."""
    options = ([f"--dependency=afterok:{':'.join(after)}"] if after else []) + (["--hold"] if hold else [])
    out = _run(["sbatch", "--parsable", *options, script], f"sbatch {script}")
    return out.strip().split(";")[0]


def release(ids: list[str]) -> None:
    if ids:
        _run(["scontrol", "release", ",".join(ids)], f"scontrol release {','.join(ids)}")


def queued(names: list[str]) -> dict[str, Job]:
    """The jobs named `names` that are pending, running or requeued, by name (the newest of a name)."""
    if not names:
        return {}
    jobs = _squeue(["-n", ",".join(names)])
    return {job.name: job for job in sorted(jobs, key=lambda j: int(j.id)) if not job.ended}


def jobs(ids: list[str]) -> dict[str, Job]:
    """What Slurm knows of the jobs `ids`, by id: squeue while slurmctld holds them, else sacct (when the cluster
    keeps accounting); a job neither knows is left out."""
    if not ids:
        return {}
    found = {job.id: job for job in _squeue(["-t", "all", "-j", ",".join(ids)])}
    missing = [i for i in ids if i not in found]
    if missing and shutil.which("sacct"):
        done = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(missing), "-o",
                               "JobIDRaw,JobName,State,Elapsed"], capture_output=True, text=True)
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            job_id, name, state, elapsed = line.split("|")[:4]
            found[job_id] = Job(job_id, name, state.split()[0], elapsed=elapsed)  # "CANCELLED by 0"
    return found


def cancel(ids: list[str]) -> None:
    if ids:
        _run(["scancel", *ids], f"scancel {' '.join(ids)}")


def depend(job_id: str, after: list[str]) -> None:
    """Make the pending job `job_id` wait for every job of `after` instead of what it waited for."""
    _run(["scontrol", "update", f"JobId={job_id}", f"Dependency=afterok:{':'.join(after)}"],
         f"scontrol update JobId={job_id}")


def _squeue(selection: list[str]) -> list[Job]:
    out = _run(["squeue", "-h", *selection, "-O", ",".join(f"{f}:|" for f in FIELDS)], "squeue")
    found = []
    for line in out.splitlines():
        job_id, name, state, reason, elapsed, restarts = (v.strip() for v in line.split("|")[:len(FIELDS)])
        found.append(Job(job_id, name, state, reason, elapsed, int(restarts) if restarts.isdigit() else None))
    return found


def _run(command: list[str], what: str) -> str:
    if shutil.which(command[0]) is None:
        raise SlurmError(f"{command[0]} not found on PATH: run this on a Slurm login node")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SlurmError(f"{what} failed ({done.returncode}): {said[-1] if said else 'no message'}")
    return done.stdout
