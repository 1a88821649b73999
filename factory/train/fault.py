"""Keeping long runs alive: a hang watchdog and planned-restart triggers (age, throughput decay).

Exit codes of a training process that stopped on purpose (all after a checkpoint, except a hang):
  0   SIGTERM / SIGUSR1 (Slurm pre-timeout signal): checkpoint saved, rerun or requeue to resume
  75  planned restart (age or slowdown): checkpoint saved, the launcher starts the process again
  124 hang: no step finished within the watchdog timeout; every thread's stack is in the log
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time

log = logging.getLogger("factory.train")
EXIT_RESTART = 75
EXIT_HUNG = 124


class Watchdog:
    """Kills the process (exit 124) with all Python stacks dumped when `beat()` stops for `timeout_s`."""

    def __init__(self, timeout_s: float, poll_s: float | None = None):
        self.timeout_s = timeout_s
        self.poll_s = poll_s or min(10.0, timeout_s / 4)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="factory-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                rank = os.environ.get("RANK", "0")
                print(f"watchdog: rank {rank}: no training step finished in {idle:.0f}s "
                      f"(timeout {self.timeout_s:.0f}s); stacks of all threads follow", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                os._exit(EXIT_HUNG)


class SlowdownDetector:
    """True once tokens/s stayed `drop` (fraction) below its moving baseline for `window_s` seconds.

    The baseline is an exponential moving average of the windows that were not slow, so gradual
    drift is followed but a sustained fall is caught (the multi-day decay Shisa V2 restarted around).
    """

    def __init__(self, drop: float, window_s: float, smoothing: float = 0.1):
        self.drop, self.window_s, self.smoothing = drop, window_s, smoothing
        self.baseline: float | None = None
        self.slow_since: float | None = None

    def update(self, tokens_per_s: float, now: float) -> bool:
        if self.baseline is None:
            self.baseline = tokens_per_s
            return False
        if tokens_per_s < (1 - self.drop) * self.baseline:
            self.slow_since = self.slow_since if self.slow_since is not None else now
            return now - self.slow_since >= self.window_s
        self.slow_since = None
        self.baseline += self.smoothing * (tokens_per_s - self.baseline)
        return False
