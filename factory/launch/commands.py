"""The command lines a launch runs: torchrun for the training verbs, one process for the others (per the
registry's `Stage.launch`)."""

from __future__ import annotations

import sys
from pathlib import Path

from factory import registry
from factory.config_base import CoreConfig
from factory.errors import ConfigError
from factory.launch_config import LaunchConfig
from factory.schema import rule
from factory.stage_api import Launch, Stage

SIGNALS_TO_HANDLE = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
"""torchrun forwards these to its workers; SIGUSR1 is not among its defaults and would kill it."""


def stage_args(stage: str, config: str | Path, overrides: list[str]) -> list[str]:
    """`-m factory.stage STAGE --config FILE [overrides]`; `launch.*` overrides only shape the launch."""
    return ["-m", "factory.stage", stage, "--config", str(config), *_stage_overrides(overrides)]


def pipeline_job_args(stage: str, config: str | Path, overrides: list[str]) -> list[str]:
    """`-m factory.pipeline --config FILE [overrides] --job STAGE`: a stage as its job of a chain runs it."""
    return ["-m", "factory.pipeline", "--config", str(config), *_stage_overrides(overrides), "--job", stage]


def status_args(config: str | Path, overrides: list[str], ended: str | None = None) -> list[str]:
    """`python -m factory.launch status --config FILE [overrides] [--job-ended STAGE]`, as a chain's jobs run it."""
    return ["python", "-m", "factory.launch", "status", "--config", str(config), *overrides,
            *(["--job-ended", ended] if ended else [])]


def _stage_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("launch.")]


def torchrun_options(launch: LaunchConfig | None, signals: str = SIGNALS_TO_HANDLE) -> list[str]:
    """Restart, signal and CPU-binding options shared by local and Slurm torchrun lines."""
    launch = launch or LaunchConfig()
    binding = ["--numa-binding", launch.cpu_bind] if launch.cpu_bind != "none" else []
    return ["--max-restarts", str(launch.max_restarts), "--signals-to-handle", signals,
            "--shutdown-timeout", str(launch.signal_seconds_before_timeout), *binding]


def torchrun_stages() -> list[str]:
    """Verbs that run one process per GPU under torchrun; every other verb is one process."""
    return [s.name for s in registry.CHAIN if s.launch is not Launch.ONE_PROCESS]


def local_command(cfg: CoreConfig, stage: str, config: str | Path, overrides: list[str],
                  nproc: int) -> list[str]:
    """The command `python -m factory.launch local` runs; validated against the parallel layout."""
    if registry.stage(stage).launch is Launch.ONE_PROCESS:
        if nproc != 1:
            raise ConfigError(f"--nproc {nproc}: stage '{stage}' runs one process "
                              f"(torchrun is for {', '.join(torchrun_stages())})")
        return [sys.executable, *stage_args(stage, config, overrides)]
    problems = world_problems(cfg, stage, nproc)
    if problems:
        raise ConfigError([f"--nproc {nproc}: {p}" for p in problems])
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            *torchrun_options(cfg.launch), *stage_args(stage, config, overrides)]


def world_problems(cfg: CoreConfig, stage: str, world: int) -> list[str]:
    """Why `world` processes cannot run `stage` with this config's parallel layout and batch."""
    spec: Stage = registry.stage(stage)
    train = getattr(cfg, spec.section, None)
    if spec.launch is Launch.DATA_PARALLEL:  # sft / dpo: every rank is a data-parallel (or ZeRO) rank
        out: list[str] = []
        if train is not None:
            rule(out, train.global_batch_size % (train.micro_batch_size * world) == 0,
                 f"{stage}.global_batch_size", train.global_batch_size,
                 f"must be divisible by micro_batch_size x world size ({train.micro_batch_size} x {world})")
        return out
    out = cfg.parallel.world_problems(world)
    if train is not None and not out:
        dp = world // cfg.parallel.model_parallel_size
        rule(out, train.global_batch_size % (train.micro_batch_size * dp) == 0, f"{stage}.global_batch_size",
             train.global_batch_size, f"must be divisible by micro_batch_size x data-parallel size "
             f"({train.micro_batch_size} x {dp}) at world size {world}")
    return out
