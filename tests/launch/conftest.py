"""The environment of a job or run that the launch tests start (the session's Slurm is the root conftest's `slurm`)."""

from __future__ import annotations

DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Left in this process's environment by in-process training tests; a job or run started from here must
not inherit them (sbatch exports the submitter's environment)."""


def job_environment(base: dict[str, str]) -> dict[str, str]:
    """`base` without a distributed launch's variables, one OpenMP thread per process."""
    return {**{k: v for k, v in base.items() if k not in DISTRIBUTED_ENV}, "OMP_NUM_THREADS": "1"}

