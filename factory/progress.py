"""Progress of long byte-bound work (streamed checkpoints): a rich bar on a terminal, and a log line
with the rate every `every_s` seconds, so batch logs (Slurm) show it too."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class ByteProgress:
    def __init__(self, what: str, total_bytes: int, every_s: float = 30.0):
        self.what, self.total, self.every_s = what, total_bytes, every_s
        self.done, self.start = 0, time.perf_counter()
        self._last_log = self.start
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self._bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
            self._task = self._bar.add_task(what, total=total_bytes)
            self._bar.start()

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        if now - self._last_log >= self.every_s:
            self._last_log = now
            log.info("%s: %.2f / %.2f GB (%.2f GB/s)", self.what, self.done / 1e9, self.total / 1e9,
                     self.done / 1e9 / (now - self.start))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
