"""`python -m factory.launch local pretrain --nproc 2` for real: SIGUSR1 to the launcher saves, a rerun resumes."""

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

from tests.train.conftest import packed_data, train_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_signal_saves_then_rerun_resumes(packed_data, tmp_path):  # noqa: F811
    cfg = train_config(packed_data, tmp_path / "run", train_iters=400, log_interval=1,
                       checkpoint={"save_interval": 1000})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    command = [sys.executable, "-m", "factory.launch", "local", "pretrain", "--config", str(config), "--nproc", "2"]
    metrics = tmp_path / "run" / "pretrain" / "metrics.jsonl"
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not (
            metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # the launcher exec'd torchrun: this reaches torchrun itself
    out, _ = proc.communicate(timeout=240)
    tracker = tmp_path / "run" / "pretrain" / "checkpoints" / "latest_checkpointed_iteration.txt"
    assert tracker.exists(), out[-3000:]
    stopped_at = int(tracker.read_text())
    assert 3 <= stopped_at < 400, out[-3000:]

    done = subprocess.run(command + ["pretrain.train_iters=" + str(stopped_at + 2)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(tracker.read_text()) == stopped_at + 2
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert iterations[-2:] == [stopped_at + 1, stopped_at + 2]
