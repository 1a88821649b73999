"""scripts/device_check.sh: the dry run names every step, check and budget and what would travel (refusing more
than the device tool's 64 MiB, or a missing carried folder); the real run installs the bundle into a target folder
and runs the doctor's GPU tier on a bare Python (here without CUDA: every check skipped, exit 0, records in $OUT)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from factory.doctor.tiers import TIERS
from tests.scripts.test_gpu_bundle import _bare_node

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_check.sh"


def _device_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def _carried(tmp_path: Path, bundle_bytes: int = 3 * 2**20) -> dict[str, str]:
    bundle, data = tmp_path / "whl", tmp_path / "data"
    bundle.mkdir()
    (data / "pack").mkdir(parents=True)
    with (bundle / "a-1.0-py3-none-any.whl").open("wb") as f:
        f.truncate(bundle_bytes)
    (data / "pack" / "blend.json").write_text("{}")
    return {"BUNDLE": str(bundle), "DATA": str(data)}


def test_the_dry_run_prints_every_step_check_budget_and_what_travels(tmp_path):
    proc = _device_check("--dry-run", **_carried(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("device check: 3 steps within 10 min (hard stop of the doctor at 540 s)\n")
    assert "  1. [0.5 min] " in out and "--target /tmp/factory-site" in out
    assert "  2. [8.5 min] PYTHONPATH=/tmp/factory-site:. timeout 540 " in out and "--tier gpu" in out
    for check in TIERS["gpu"][1]:
        assert f"[{check.minutes:g} min" in out and f"] {check.name}: {check.proves}" in out
    assert "  3. copy runs/device-check/doctor.md, doctor.json and device_check.log to $OUT" in out
    assert re.search(r"whl: 1 files, 3\.0 MiB", out) and re.search(r"data: 1 files, 0\.0 MiB", out)
    sizes = re.search(r"ignore\): ([\d.]+) MiB; with the carried paths ([\d.]+) MiB of the 64 MiB the device tool", out)
    tree, total = map(float, sizes.groups())
    assert total == pytest.approx(tree + 3.0, abs=0.11)
    assert 'run(command="bash scripts/device_check.sh", carry=[' in out and "timeout_s=600)" in out


def test_one_gpu_budgets_fit_the_doctor_budget_and_the_script_fits_ten_minutes():
    script = SCRIPT.read_text()
    doctor = float(re.search(r'DOCTOR_MINUTES="\$\{DOCTOR_MINUTES:-([\d.]+)\}"', script).group(1))
    install = float(re.search(r"INSTALL_MINUTES=([\d.]+)", script).group(1))
    assert sum(c.minutes for c in TIERS["gpu"][1] if c.devices == 1) <= doctor
    assert install + doctor + 0.5 <= 10  # the hard stop comes 30 s after the doctor's budget


def test_more_than_64_mib_to_carry_is_refused(tmp_path):
    proc = _device_check("--dry-run", **_carried(tmp_path, bundle_bytes=64 * 2**20))
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert re.fullmatch(r"device_check: 6[67]\.\d MiB would travel, over the 64 MiB limit", line), line


def test_a_missing_carried_folder_is_named(tmp_path):
    proc = _device_check("--dry-run", BUNDLE=str(tmp_path / "nope"), DATA=str(tmp_path))
    assert proc.returncode == 1 and proc.stderr.splitlines() == ["device_check: a carried path is missing"]
    assert f"{tmp_path / 'nope'}: MISSING" in proc.stdout
    real = _device_check(BUNDLE=str(tmp_path / "nope"), DATA=str(tmp_path))
    assert real.returncode == 2 and real.stderr.splitlines() == [
        f"device_check: {tmp_path / 'nope'} is missing (see this script's header)"]


def test_the_run_installs_the_bundle_and_runs_the_gpu_tier_on_a_bare_python(this_python_bundle, doctor_cpu_data,
                                                                           tmp_path):
    """As on the device machine: a Python with only torch (and transformers) beside pip, the bundle installed to a
    target folder; without CUDA the GPU tier skips every check and the records land in $OUT."""
    bundle = this_python_bundle
    bundled = {p.name.split("-")[0].lower().replace("_", "-") for p in bundle.glob("*.whl")}
    bare = _bare_node(tmp_path / "bare", bundled)
    (bare / "pip").symlink_to(Path(__import__("pip").__file__).parent)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexport PYTHONPATH=\"${{PYTHONPATH:+$PYTHONPATH:}}{bare}\" PYTHONNOUSERSITE=1\n"
                      f"exec {sys.executable} -S \"$@\"\n")
    python.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    proc = _device_check(PYTHON=str(python), BUNDLE=str(bundle), DATA=str(doctor_cpu_data),
                         TARGET=str(tmp_path / "target"), OUT=str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "target" / "megatron" / "core").is_dir() and (tmp_path / "target" / "pydantic").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["device_check.log", "doctor.json", "doctor.md"]
    text = (out / "doctor.md").read_text()
    assert text.startswith("# doctor: gpu tier, PASS: 0 passed, 0 failed, 14 skipped")
    assert text.count("| SKIP | skipped: no CUDA device |") == len(TIERS["gpu"][1])
    assert "== doctor exited 0 after" in (out / "device_check.log").read_text()
