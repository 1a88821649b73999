"""`python -m factory.doctor`: the CPU tier passes end to end; the GPU tier without CUDA skips every check."""

from __future__ import annotations

import json
import subprocess
import sys
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
    assert record["passed"] and {c["status"] for c in record["checks"]} == {"pass"}
    names = [c["name"] for c in record["checks"]]
    assert names == ["runtime", "dense_model", "moe_model", "data", "pretrain_resume", "upcycle", "export",
                     "tensor_expert_parallel"]
    assert "max |dloss| 0" in record["checks"][4]["figure"]
    assert "tensor=2: max |dlogits|" in record["checks"][7]["figure"]
    assert "expert=2: max |dlogits|" in record["checks"][7]["figure"]
    assert "| export | pass |" in (tmp_path / "doctor.md").read_text()
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
