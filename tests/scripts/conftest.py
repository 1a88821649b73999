"""What the GPU bundle and device check tests both need, made once per test process (one pytest-xdist worker):
the bundle of this interpreter's wheels and the CPU tier's prepared data folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "gpu-bundle"
"""Downloads are kept here (git-ignored) so reruns only re-resolve."""


def bundle(python_version: str) -> tuple[Path, str]:
    """scripts/gpu_bundle.sh into CACHE/<version>: the folder and what the script printed (skips offline)."""
    dest = CACHE / python_version
    env = {**os.environ, "PYTHON": sys.executable, "PYTHON_VERSION": python_version}
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_bundle.sh"), str(dest)], env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0 and re.search(r"(?i)connection|resolve|network|timed out|Could not fetch", proc.stderr):
        pytest.skip(f"package registry unreachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest, proc.stdout


@pytest.fixture(scope="session")
def this_python_bundle() -> Path:
    """scripts/gpu_bundle.sh's wheels for this interpreter's Python version (skips when the registry is unreachable)."""
    return bundle(f"{sys.version_info.major}.{sys.version_info.minor}")[0]


@pytest.fixture(scope="session")
def doctor_cpu_data(tmp_path_factory) -> Path:
    """The folder the CPU tier's checks read (`python -m factory.doctor.prepare DIR --tier cpu`); no check writes
    into it (the doctor's work goes to its own folder)."""
    folder = tmp_path_factory.mktemp("doctor-cpu") / "data"
    done = subprocess.run([sys.executable, "-m", "factory.doctor.prepare", str(folder), "--tier", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder
