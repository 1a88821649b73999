"""A real one-node Slurm (slurmctld + slurmd + munge) for the session, brought up only by tests that ask."""

from __future__ import annotations

import shutil

import pytest

from tests.launch.slurm_cluster import LocalSlurm, SlurmUnavailable, install


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
