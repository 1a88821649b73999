"""What the GPU bundle and device check tests both need, made once per test process (one pytest-xdist worker):
the bundle of this interpreter's wheels and the CPU tier's prepared data folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def this_python_bundle() -> Path:
    """scripts/gpu_bundle.sh's wheels for this interpreter's Python version (skips when the registry is unreachable)."""
    from tests.scripts.test_gpu_bundle import _bundle

    return _bundle(f"{sys.version_info.major}.{sys.version_info.minor}")[0]


@pytest.fixture(scope="session")
def doctor_cpu_data(tmp_path_factory) -> Path:
    """The folder the CPU tier's checks read (`python -m factory.doctor.prepare DIR --tier cpu`); no check writes
    into it (the doctor's work goes to its own folder)."""
    folder = tmp_path_factory.mktemp("doctor-cpu") / "data"
    done = subprocess.run([sys.executable, "-m", "factory.doctor.prepare", str(folder), "--tier", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder
