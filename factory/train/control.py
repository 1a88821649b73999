"""Run control, the parts of a training run that are not training: stop signals, the hang watchdog and
planned restarts, decided together by every rank after each step (see factory/train/fault.py for codes)."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from factory.errors import FactoryError
from factory.train.config import FaultConfig
from factory.train.fault import EXIT_RESTART, SlowdownDetector, Watchdog
from factory.train.stop import STOP_SIGNALS, received_while_starting

log = logging.getLogger("factory.train")


class TrainingInterrupted(FactoryError):
    """Stopped by SIGTERM/SIGUSR1 after saving a checkpoint; rerun the same command to resume."""

    exit_code = 0
    label = "stopped"


class PlannedRestart(FactoryError):
    """Stopped for a planned restart (age or slowdown) after saving; the launcher starts it again."""

    exit_code = EXIT_RESTART
    label = "restart"


@dataclass
class Verdict:
    """What every rank does after a step: carry on, or save and stop (`restart`: ask to be started again)."""

    stop: bool = False
    restart: bool = False
    reason: str = ""

    @property
    def leave(self) -> bool:
        return self.stop or self.restart


class RunControl:
    """Installs the stop-signal handlers and the watchdog for the duration of a `with` block."""

    def __init__(self, fault: FaultConfig, device: torch.device):
        self.fault, self.device = fault, device
        self.stop_requested = False
        self.restart_reason = ""
        self.watchdog = Watchdog(60 * fault.hang_timeout_minutes) if fault.hang_timeout_minutes else None
        self.slowdown = (SlowdownDetector(fault.restart_on_slowdown, 60 * fault.slowdown_minutes)
                         if fault.restart_on_slowdown else None)
        self.started = time.monotonic()
        self._previous: dict = {}

    def __enter__(self) -> RunControl:
        self._previous = {s: signal.signal(s, self._request_stop) for s in STOP_SIGNALS}
        self.stop_requested = self.stop_requested or received_while_starting()
        if self.watchdog:
            self.watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.watchdog:
            self.watchdog.stop()
        for s, handler in self._previous.items():  # once stopping, late duplicates must not kill the exit
            signal.signal(s, signal.SIG_IGN if self.stop_requested else handler)

    def beat(self) -> None:
        """A step (or a checkpoint write) finished: the process is alive."""
        if self.watchdog:
            self.watchdog.beat()

    def observe_throughput(self, tokens_per_s: float) -> None:
        if self.slowdown and self.slowdown.update(tokens_per_s, time.monotonic()):
            self.restart_reason = (f"tokens/s {tokens_per_s:,.0f} stayed {self.fault.restart_on_slowdown:.0%} "
                                   f"below the baseline {self.slowdown.baseline:,.0f} for "
                                   f"{self.fault.slowdown_minutes} min")

    def verdict(self) -> Verdict:
        """Stop or restart as any rank wants it: all ranks must save and leave together."""
        hours = self.fault.restart_every_hours
        if hours and time.monotonic() - self.started >= 3600 * hours:
            self.restart_reason = f"planned restart after {hours} h"
        flags = torch.tensor([float(self.stop_requested), float(bool(self.restart_reason))], device=self.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, restart = bool(flags[0].item()), bool(flags[1].item())
        return Verdict(stop, restart, self.restart_reason or ("restart requested by another rank" if restart else ""))

    def raise_for(self, verdict: Verdict, stage: str, iteration: int, ckpt_root: Path) -> None:
        """The exception that ends the run after its checkpoint was saved."""
        where = f"at iteration {iteration}; checkpoint saved to {ckpt_root}"
        if verdict.stop:
            raise TrainingInterrupted(f"{stage}: stopped by signal {where}; rerun the same command to resume")
        raise PlannedRestart(f"{stage}: {verdict.reason} {where}; exit {EXIT_RESTART} asks the launcher to start "
                             "it again")

    def _request_stop(self, signum, frame) -> None:
        log.warning("received %s: saving a checkpoint after this iteration", signal.Signals(signum).name)
        self.stop_requested = True
