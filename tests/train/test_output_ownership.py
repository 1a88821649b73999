"""A training run's folder is its own: an export pointed at it by a typo is refused, and a second run of the
same stage on it is refused while the first writes (no iteration written twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from factory.errors import ConfigError
from factory.registry import STAGES
from factory.runner import run_stage
from factory.train import checkpoint as ckpt
from tests.badinput.conftest import snapshot
from tests.train.conftest import train_config

ROOT = Path(__file__).resolve().parents[2]


def test_export_into_a_pretrain_folder_is_refused_and_its_checkpoints_kept(packed_data, tmp_path):
    cfg = train_config(packed_data, tmp_path, train_iters=2)
    run_stage(STAGES["pretrain"], cfg)
    folder = tmp_path / "pretrain"
    before = snapshot(folder)
    export = cfg.model_copy(update={"export": STAGES["export"].sections[0].type.model_validate({
        "checkpoint": str(folder / "checkpoints"), "tokenizer_dir": str(packed_data / "tokenizer"),
        "output_dir": str(folder)})})
    with pytest.raises(ConfigError, match=f"^export: {folder}: holds the output of stage pretrain, not export; "
                                          "export writes only into .* choose another export.output_dir"):
        run_stage(STAGES["export"], export)
    assert snapshot(folder) == before


def test_a_second_pretrain_on_one_folder_is_refused_while_the_first_writes(packed_data, tmp_path):
    """The first run is frozen (SIGSTOP) once it holds the lock, so the second meets it mid-run every time."""
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump(train_config(packed_data, tmp_path / "run", train_iters=8).to_dict()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "factory.stage", "pretrain", "--config", str(config)]
    folder, lock = tmp_path / "run" / "pretrain", tmp_path / "run" / ".pretrain.lock"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            first.send_signal(signal.SIGSTOP)
            second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert second.returncode == 1 and len(errors) == 1, second.stderr
    assert errors[0].startswith(f"error: pretrain output {folder}: in use by pid {first.pid} on "), errors[0]
    iterations = [json.loads(line)["iteration"] for line in (folder / "metrics.jsonl").open()]
    assert iterations == list(range(1, 9)), "each iteration logged once, by the first run"
    assert ckpt.latest_iteration(folder / "checkpoints") == 8 and not lock.exists()
