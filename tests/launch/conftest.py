"""A real one-node Slurm (slurmctld + slurmd + munge) for the session, brought up only by tests that ask."""

from __future__ import annotations

import shutil

import pytest

from tests.launch.slurm_cluster import LocalSlurm, SlurmUnavailable, install

DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Left in this process's environment by in-process training tests; a job or run started from here must
not inherit them (sbatch exports the submitter's environment)."""


def job_environment(base: dict[str, str]) -> dict[str, str]:
    """`base` without a distributed launch's variables, one OpenMP thread per process."""
    return {**{k: v for k, v in base.items() if k not in DISTRIBUTED_ENV}, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> LocalSlurm:
    """Installs Debian's Slurm when missing, starts its daemons, and stops them (by PID) at the end."""
    try:
        install()
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm to test on: {e}")
    root = tmp_path_factory.mktemp("slurm")
    cluster = LocalSlurm(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
