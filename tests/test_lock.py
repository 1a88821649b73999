"""One writer at a time: a second holder is refused with the holder's name; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from factory.errors import OutputError
from factory.lock import FolderLock

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from factory.lock import FolderLock; FolderLock(sys.argv[1], 'x').acquire(); " \
       "print('held', flush=True); time.sleep(600)"


def hold_in_child(path: Path) -> subprocess.Popen:
    """A real second process that takes the lock at `path` and keeps it until it is killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_with_the_holder(tmp_path):
    lock = tmp_path / ".out.lock"
    child = hold_in_child(lock)
    try:
        with pytest.raises(OutputError) as info:
            FolderLock(lock, "data output out").acquire()
    finally:
        child.kill()
        child.wait()
    line, = info.value.lines()
    assert line.startswith(f"data output out: in use by pid {child.pid} on ") and str(lock) in line
    assert f": -c {lock} (" in line, "the holder's command line is named"


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, caplog):
    lock = tmp_path / ".out.lock"
    child = hold_in_child(lock)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert json.loads(lock.read_text())["pid"] == child.pid, "SIGKILL leaves the file behind"
    with FolderLock(lock, "data output out"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert f"took over the lock of pid {child.pid}" in caplog.text
    assert not lock.exists(), "release removes the file"


def _left_by(lock: Path, host: str, job: str | None) -> None:
    lock.write_text(json.dumps({"host": host, "pid": 4242, "command": "python -m factory.stage pretrain",
                                "started_at": "2026-12-01T00:00:00+00:00", "slurm_job": job}))


def test_a_holder_on_another_host_is_not_guessed_dead(tmp_path, monkeypatch):
    lock = tmp_path / ".out.lock"
    _left_by(lock, "node-17", "991")
    monkeypatch.setenv("SLURM_JOB_ID", "992")
    with pytest.raises(OutputError, match=r"locked by pid 4242 on node-17, Slurm job 991.*if it is gone, delete"):
        FolderLock(lock, "pretrain output out").acquire()
    assert json.loads(lock.read_text())["host"] == "node-17"


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch, caplog):
    lock = tmp_path / ".out.lock"
    _left_by(lock, "node-17", "991")
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    with FolderLock(lock, "pretrain output out"):
        assert json.loads(lock.read_text())["slurm_job"] == "991" and json.loads(lock.read_text())["pid"] == os.getpid()
    assert "took over the lock of pid 4242 on node-17, Slurm job 991" in caplog.text


def test_a_released_lock_is_taken_again_and_still_exclusive(tmp_path):
    lock = tmp_path / ".out.lock"
    FolderLock(lock, "a").acquire().release()
    with FolderLock(lock, "b"):
        with pytest.raises(OutputError, match="in use by pid"):
            FolderLock(lock, "c").acquire()
