"""`python -m factory.launch local pretrain --nproc 2` for real: SIGUSR1 to its process group after a periodic
checkpoint saves the current iteration, a rerun resumes."""

from __future__ import annotations

import contextlib
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


def test_signal_to_the_group_saves_then_rerun_resumes(packed_data, tmp_path):  # noqa: F811
    # 24 iterations (96 samples) stay within one epoch of the tiny corpus, so the rerun's shorter run reads
    # its samples in the same order: a resume that would read other data is refused (docs/pipeline.md).
    cfg = train_config(packed_data, tmp_path / "run", train_iters=24, log_interval=1,
                       checkpoint={"save_interval": 2})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    command = [sys.executable, "-m", "factory.launch", "local", "pretrain", "--config", str(config), "--nproc", "2"]
    metrics = tmp_path / "run" / "pretrain" / "metrics.jsonl"
    tracker = tmp_path / "run" / "pretrain" / "checkpoints" / "latest_checkpointed_iteration.txt"
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=out, stderr=out, start_new_session=True)
        try:
            deadline = time.time() + 240
            while proc.poll() is None and time.time() < deadline and not tracker.exists():
                time.sleep(0.05)
            first = int(tracker.read_text())
            # The launcher exec'd torchrun, which leads the group: kill -USR1 -- -PGID reaches it; it
            # forwards the signal to its workers' groups (os.killpg) and waits for them.
            os.killpg(proc.pid, signal.SIGUSR1)
            proc.wait(timeout=240)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    stopped_at = int(tracker.read_text())
    assert first < stopped_at < 24 and f"stopped by signal at iteration {stopped_at}" in text, text[-3000:]
    assert proc.returncode == 1, text[-3000:]  # torchrun re-raises the signal as its failure after the save

    done = subprocess.run(command + ["pretrain.train_iters=" + str(stopped_at + 2)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(tracker.read_text()) == stopped_at + 2
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert iterations[-2:] == [stopped_at + 1, stopped_at + 2]
