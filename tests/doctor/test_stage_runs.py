"""Several `factory.stage` runs in one launch (the doctor's layout check): each run built anew in the same
process, the first failure ending the sequence with its exit code and nothing after it run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from factory.doctor.checks import CheckFailed, DoctorContext
from factory.doctor.parallel_check import _torchrun
from factory.doctor.shapes import CPU
from factory.doctor.stage_runs import main
from tests.train.conftest import losses, packed_data, train_config  # noqa: F401 (fixture)


def _write(config, path: Path) -> str:
    path.write_text(yaml.safe_dump(config.to_dict()))
    return str(path)


def test_the_first_failing_run_ends_the_sequence_with_its_exit_code(packed_data, tmp_path, capsys):
    first = _write(train_config(packed_data, tmp_path / "first", train_iters=2), tmp_path / "first.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(first).read_text().replace("train_iters: 2", "train_iters: -1"))
    never = _write(train_config(packed_data, tmp_path / "never", train_iters=2), tmp_path / "never.yaml")
    assert main(["pretrain", first, str(broken), never]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {broken}")
    assert len(losses(tmp_path / "first")) == 2 and not (tmp_path / "never").exists()
    assert not torch.distributed.is_initialized()


def test_a_failing_run_under_torchrun_fails_the_check_with_its_error_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"run: {{name: x, dir: {tmp_path / 'run'}}}\npretrain: {{train_iters: -1}}\n")
    with pytest.raises(CheckFailed) as failed:
        _torchrun(DoctorContext("cpu", CPU, tmp_path), "-m", "factory.doctor.stage_runs", "pretrain", str(broken))
    assert str(failed.value) == (f"torchrun exited 1: error: {broken}: pretrain.train_iters=-1: Input should be "
                                 "greater than or equal to 1")
    assert not (tmp_path / "run").exists()
