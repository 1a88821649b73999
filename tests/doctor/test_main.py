"""`python -m factory.doctor`: the CPU tier passes end to end; the GPU tier without CUDA skips every check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _doctor(tier: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory.doctor", "--tier", tier, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cpu_tier_passes_and_writes_its_record(tmp_path):
    proc = _doctor("cpu", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    record = json.loads((tmp_path / "doctor.json").read_text())
    checks = {c["name"]: c for c in record["checks"]}
    assert list(checks) == ["runtime", "dense_model", "moe_model", "precision_agreement", "dense_mfu", "moe_step_ratio",
                            "moe_kernels", "data", "pretrain_resume", "upcycle", "export", "memory_plan",
                            "tensor_expert_parallel", "resume_other_layout"]
    skipped = {"precision_agreement", "memory_plan"}  # bf16 training and GPU memory need CUDA
    assert record["passed"] and all(c["status"] == ("skip" if n in skipped else "pass") for n, c in checks.items())
    assert checks["precision_agreement"]["figure"].startswith("skipped: bf16 training needs CUDA")
    assert "max |dloss| 0" in checks["pretrain_resume"]["figure"]
    assert "tensor=2: max |dlogits|" in checks["tensor_expert_parallel"]["figure"]
    assert "expert=2: max |dlogits|" in checks["tensor_expert_parallel"]["figure"]
    assert "tokens/s" in checks["dense_mfu"]["figure"] and "ratio" in checks["moe_step_ratio"]["figure"]
    assert "ran SequentialMLP + MoEAllGatherTokenDispatcher" in checks["moe_kernels"]["figure"]
    assert re.search(r"DP=2 -> TP=2 at step 3 of 6 \(plain optimizer\): max \|dloss\| ", checks["resume_other_layout"]["figure"])
    text = (tmp_path / "doctor.md").read_text()
    assert text.startswith("# doctor: cpu tier, PASS: 12 passed, 0 failed, 2 skipped")
    assert "| export | PASS | mixtral float32: max \\|dlogits\\| " in text
    assert not list(tmp_path.glob("work-*"))  # the scratch folder is gone


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path needs a machine without CUDA")
def test_gpu_tier_without_cuda_skips_every_check(tmp_path):
    proc = _doctor("gpu", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "doctor.json").read_text())
    assert record["checks"] and all(c["figure"] == "skipped: no CUDA device" for c in record["checks"])


def test_a_bad_data_folder_is_one_line_and_exit_2_before_any_check(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "factory.doctor", "--tier", "cpu", "--data", str(tmp_path / "nope"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --data {tmp_path / 'nope'}: missing {tmp_path / 'nope/tokenizer/tokenizer_config.json'}, "
        f"{tmp_path / 'nope/pack/blend.json'} (expected the tokenizer stage's output in tokenizer/ and the pack "
        "stage's in pack/)"]
    assert not out.exists()


@pytest.mark.parametrize("minutes", ["-5", "0", "nan", "inf"])
def test_a_time_budget_that_is_not_a_positive_number_is_refused_in_one_line(tmp_path, capsys, minutes):
    """`--minutes -5` used to skip every check and print PASS."""
    from factory.doctor.__main__ import main

    code = main(["--tier", "cpu", "--minutes", minutes, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: --minutes {float(minutes):g}: expected a positive number of minutes\n"
    assert not (tmp_path / "out").exists()


def test_a_check_whose_budget_no_longer_fits_is_skipped_and_a_cut_off_run_keeps_pending_records(tmp_path):
    """The budget is checked before each check starts; the records written while the doctor runs list the checks
    not reached yet, so a run stopped from outside (the device script's hard limit) reads INCOMPLETE."""
    from factory.doctor import report
    from factory.doctor.checks import Check, DoctorContext, pending, run_checks
    from factory.doctor.shapes import CPU

    seen = []
    checks = [Check("quick", "runs", lambda c: "done", minutes=0.01), Check("long", "runs long", lambda c: "done",
                                                                            minutes=5.0)]
    results = run_checks(checks, DoctorContext("cpu", CPU, tmp_path), time.monotonic() + 60, seen.append)
    assert [(r.name, r.status) for r in results] == [("quick", "pass"), ("long", "skip")]
    assert results[1].figure.startswith("skipped: its budget of 5 min exceeds the 1.0 min left")
    assert [r.status for r in seen[0]] == ["pass", "pending"]
    report.write(tmp_path, "cpu", "cmd", seen[0], {})
    assert (tmp_path / "doctor.md").read_text().startswith("# doctor: cpu tier, INCOMPLETE: 1 passed, 0 failed, "
                                                           "0 skipped, 1 not reached")
    assert not json.loads((tmp_path / "doctor.json").read_text())["passed"]
    assert [r.status for r in pending(checks)] == ["pending", "pending"]


def test_list_prints_each_check_with_its_budget(capsys):
    from factory.doctor.__main__ import main
    from factory.doctor.tiers import TIERS

    assert main(["--tier", "gpu", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[0.25 min] runtime: the runtime sets up the process group and Megatron parallel state"
    assert "[1 min, 2 GPUs] tensor_expert_parallel: " in lines[-3]
    assert lines[-1] == f"{len(TIERS['gpu'][1])} checks, budgets adding up to 10.1 min (7.6 min on one GPU)"
