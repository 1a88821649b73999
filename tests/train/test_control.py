"""RunControl: stop signals, planned restarts and their one-line messages; handlers restored afterwards."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from factory.train.config import FaultConfig
from factory.train.control import PlannedRestart, RunControl, TrainingInterrupted


def test_a_stop_signal_turns_the_next_verdict_into_a_stop_and_later_ones_are_ignored():
    before = signal.getsignal(signal.SIGUSR1)
    with RunControl(FaultConfig(), torch.device("cpu")):
        pass
    assert signal.getsignal(signal.SIGUSR1) is before  # no stop asked for: the handlers come back
    try:
        with RunControl(FaultConfig(), torch.device("cpu")) as control:
            assert not control.verdict().leave
            os.kill(os.getpid(), signal.SIGUSR1)
            verdict = control.verdict()
            assert verdict.stop and not verdict.restart
            with pytest.raises(TrainingInterrupted, match="pretrain: stopped by signal at iteration 7; checkpoint"):
                control.raise_for(verdict, "pretrain", 7, "/run/checkpoints")
        # once stopping, a late duplicate (Slurm and torchrun both deliver) must not kill the clean exit
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_age_and_slowdown_ask_for_a_planned_restart():
    control = RunControl(FaultConfig(restart_every_hours=1), torch.device("cpu"))
    control.started -= 3601
    verdict = control.verdict()
    assert verdict.restart and verdict.reason == "planned restart after 1.0 h"
    with pytest.raises(PlannedRestart) as info:
        control.raise_for(verdict, "cpt", 3, "/c")
    assert info.value.exit_code == 75
    slow = RunControl(FaultConfig(restart_on_slowdown=0.5, slowdown_minutes=1e-9), torch.device("cpu"))
    for tokens_per_s in (1000.0, 100.0, 100.0):  # baseline, slow from now, still slow a moment later
        slow.observe_throughput(tokens_per_s)
    assert slow.verdict().restart and "below the baseline 1,000" in slow.verdict().reason
