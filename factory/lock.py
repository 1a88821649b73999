"""One writer at a time: a lock file naming its holder (host, pid, command, start time, Slurm job).

The lock is an `flock` on the file, so the kernel releases it when its holder dies, however it dies; the JSON
inside only says who holds it. A file left by a holder that is gone (SIGKILL, a node that went down) is taken
over with one info line: on this host when the flock is free, and on any host when it names this same Slurm
job (a requeued job restarts on another node with the same job id). A holder on another host that is not this
job cannot be checked from here: the refusal names it and the file to delete if it is gone.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from factory.errors import OutputError

log = logging.getLogger(__name__)


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def describe_holder(holder: dict[str, Any]) -> str:
    job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return (f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('started_at')}: "
            f"{holder.get('command')}")


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 1 << 16)
    try:
        holder = json.loads(data.decode("utf-8")) if data.strip() else None
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class FolderLock:
    """The lock `path` for `what` (a run folder or an output folder); `release()` or a `with` block frees it."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise an OutputError naming its holder."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise OutputError(self._refusal(holder)) from None
            if self._same_file(fd):
                break
            os.close(fd)  # released and removed between our open and flock: try the new file
        previous = _read_holder(fd)
        if previous is not None and not self._is_stale(previous):
            os.close(fd)
            raise OutputError(self._refusal(previous, unverifiable=True))
        if previous is not None:
            log.info("%s: took over the lock of %s (%s), which is gone", self.what, describe_holder(previous),
                     self.path)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(_holder()) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and free the flock (in that order, so a waiter never locks a removed file)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{self.what}: cannot create the lock {self.path} ({e.strerror})") from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    @staticmethod
    def _is_stale(holder: dict[str, Any]) -> bool:
        """A holder is gone when its flock was free and it ran here, or it was this same Slurm job."""
        job = os.environ.get("SLURM_JOB_ID")
        return holder.get("host") == socket.gethostname() or (job is not None and holder.get("slurm_job") == job)

    def _refusal(self, holder: dict[str, Any] | None, unverifiable: bool = False) -> str:
        who = describe_holder(holder) if holder else "a process that has not yet written its name"
        if unverifiable:
            return (f"{self.what}: locked by {who} ({self.path}); another host's process cannot be checked "
                    f"from here: if it is gone, delete {self.path}")
        return f"{self.what}: in use by {who} ({self.path}); wait for it to finish or stop it"
