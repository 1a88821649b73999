"""Stop signals during a training stage's start-up are kept for its first step (factory/train/stop.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from factory.train import stop
from tests.train.conftest import train_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_listening_records_then_restores_or_ignores():
    before = signal.getsignal(signal.SIGUSR1)
    with stop.listening():
        assert not stop.received_while_starting()
    assert signal.getsignal(signal.SIGUSR1) is before
    try:
        with stop.listening():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)  # the handler runs between bytecodes of the main thread
            assert stop.received_while_starting()
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # after a stop, late signals are ignored
    finally:
        signal.signal(signal.SIGUSR1, before)


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` (its SigCgt mask in /proc)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigCgt:"))
    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)


@pytest.mark.slow
def test_usr1_while_starting_with_it_ignored_on_entry_stops_after_the_first_step(packed_data, tmp_path):
    """As under the Slurm scripts: the worker starts with SIGUSR1 ignored and gets it before its loop."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(train_config(packed_data, tmp_path, train_iters=400).to_dict()))
    command = [sys.executable, "-m", "factory.stage", "pretrain", "--config", str(config)]
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=out, stderr=out, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN))
        try:
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline and not _catches(proc.pid, signal.SIGUSR1):
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGUSR1)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 0 and "received SIGUSR1 while starting" in text, text[-3000:]
    assert "stopped by signal at iteration 1;" in text, text[-3000:]
    assert (tmp_path / "pretrain/checkpoints/latest_checkpointed_iteration.txt").read_text().strip() == "1"
