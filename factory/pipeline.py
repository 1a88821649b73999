"""`python -m factory.pipeline --config FILE`: run the stages a config lists, in order, skipping each
stage whose config sections, upstream stages and recorded inputs are unchanged since its last run.

State lives in `<run.dir>/pipeline.json` (per stage: fingerprint, status, manifest, times, error). The jobs of
a Slurm chain (`python -m factory.launch slurm pipeline`) each run one stage through `--job STAGE`, which
records it the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from factory import registry
from factory.config import load_config
from factory.config_base import CoreConfig
from factory.decisions import (Decision, check_selection, decide_and_check, describe, fingerprints, fresh_starts,
                               moved_from, output_folder, pipeline_stages, staleness, training_plans)
from factory import chain_record
from factory.errors import ConfigError, FactoryError, OutputError, report
from factory.io import move_aside, os_error_line
from factory.lock import FolderLock
from factory.logs import setup_logging
from factory.manifest import MANIFEST_NAME, is_main_process
from factory.process_exit import exit_process
from factory.report import write_report
from factory.run_state import load_state, now, record_stage
from factory.runner import run_stage

log = logging.getLogger(__name__)


def run_one(cfg: CoreConfig, d: Decision, fp: dict[str, Any], start_over: bool) -> None:
    """Run one stage, recording its status in pipeline.json before and after (rank 0 of a launch records)."""
    stage = registry.STAGES[d.stage]
    rec = {**fp, "status": "running", "reason": d.reason, "started_at": now()}
    rec.update({"moved_aside": d.moved_aside} if d.moved_aside else {})
    _record(cfg, d.stage, rec)
    t0 = time.perf_counter()
    try:
        if start_over:
            moved = move_aside(output_folder(cfg, d.stage), cfg.run.dir)
            rec["moved_aside"] = str(moved)
        manifest = run_stage(stage, cfg)
        rec.update(status="done", manifest=str(manifest.out_dir / MANIFEST_NAME))
    except BaseException as e:
        stopped = isinstance(e, FactoryError) and e.exit_code in (0, 75)
        rec.update(status="stopped" if stopped else "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                   error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise
    finally:
        rec.update(ended_at=now(), wall_seconds=round(time.perf_counter() - t0, 3))
        _record(cfg, d.stage, rec)


def _record(cfg: CoreConfig, stage: str, rec: dict[str, Any]) -> None:
    if is_main_process():
        record_stage(cfg.run.dir, stage, rec)


def run_pipeline(cfg: CoreConfig, start: str | None = None, only: str | None = None,
                 dry_run: bool = False, fresh: set[str] | frozenset[str] = frozenset()) -> list[Decision]:
    """Decide, then run the stages that need it; raises StageFailure naming the stage that failed.

    Before anything runs, a resumable stage that would have to start over on an earlier output is refused
    unless it is in `fresh`, whose earlier outputs are then moved aside (never deleted)."""
    check_selection(cfg, start, only, fresh)
    if dry_run:
        return decide_and_check(cfg, start, only, fresh)[0]
    made = not cfg.run.dir.exists()
    try:
        cfg.run.dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"run.dir: {os_error_line(e, cfg.run.dir)}") from None
    try:
        with FolderLock(cfg.run.dir / LOCK_NAME, f"pipeline of {cfg.run.dir}"):
            if queued := chain_record.still_queued(cfg.run.dir):
                raise OutputError(f"run.dir {cfg.run.dir}: its Slurm chain is queued or running ({', '.join(queued)}); "
                                  "one writer per run: wait for it (python -m factory.launch status --config FILE) "
                                  "or scancel its jobs")
            decisions, _, start_over = decide_and_check(cfg, start, only, fresh)
            return _run_decided(cfg, decisions, start_over)
    finally:
        if made and not any(cfg.run.dir.iterdir()):
            cfg.run.dir.rmdir()


LOCK_NAME = ".pipeline.lock"
"""In the run folder: one pipeline at a time writes a run (factory/lock.py)."""


def run_job(cfg: CoreConfig, stage: str) -> list[Decision]:
    """Run `stage` as its job of the run's Slurm chain (factory/launch/chain.py), recorded as the pipeline does.

    The chain decided when it was submitted that the stage runs, and why (chain.json), and moved aside the
    earlier outputs `--fresh` let start over. The job takes no run lock (the chain's jobs record their stages
    side by side) and decides only whether the stage starts over, from the record as it is now: a requeued
    job continues its own output, and an output that appeared since the submission is refused, not moved."""
    if stage not in pipeline_stages(cfg):
        raise ConfigError(f"--job {stage}: not a stage of this config (stages: {', '.join(pipeline_stages(cfg))})")
    state = load_state(cfg.run.dir)
    why = staleness(state["stages"].get(stage), fingerprints(cfg, pipeline_stages(cfg))[stage])
    if why and is_main_process():
        fresh_starts(cfg, [Decision(stage, "run", why[0], fresh=why[1])], set(), moved_from(cfg, state))
    job = chain_record.entry(cfg.run.dir, stage)
    d = Decision(stage, "run", job.get("reason", "run by a Slurm job"), moved_aside=job.get("moved_aside"))
    return _run_decided(cfg, [d], set())


def _run_decided(cfg: CoreConfig, decisions: list[Decision], start_over: set[str]) -> list[Decision]:
    fps = fingerprints(cfg, pipeline_stages(cfg))
    for i, d in enumerate(decisions, 1):
        log.info("pipeline: [%d/%d] %s: %s (%s)", i, len(decisions), d.stage, d.action, d.reason)
        if d.action == "run":
            try:
                run_one(cfg, d, fps[d.stage], d.stage in start_over)
            except FactoryError as e:
                raise StageFailure(d.stage, e.lines(), e.exit_code, e.label) from e
            except Exception as e:
                log.exception("pipeline: %s raised", d.stage)
                raise StageFailure(d.stage, [f"{type(e).__name__}: {e}"], 1, "error") from e
    return decisions


class StageFailure(FactoryError):
    """A stage that did not finish; carries the stage's exit code and message."""

    def __init__(self, stage: str, lines: list[str], exit_code: int, label: str):
        self.stage, self.exit_code, self.label = stage, exit_code, label
        self._lines = [f"stage {stage}: {line}" for line in lines]
        super().__init__("\n".join(self._lines))

    def lines(self) -> list[str]:
        return self._lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m factory.pipeline", description=(
        "Run the stages a config lists, in order; skip those whose config and inputs are unchanged."))
    p.add_argument("config_pos", nargs="?", metavar="CONFIG", help="YAML config (or --config)")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--from", dest="start", metavar="STAGE", help="run STAGE and every later stage, no skipping")
    which.add_argument("--only", metavar="STAGE", help="run STAGE alone, no skipping")
    which.add_argument("--job", metavar="STAGE", help="run STAGE as its job of the run's Slurm chain (what the "
                       "chain's sbatch scripts run; python -m factory.launch slurm pipeline): no run lock, no report")
    p.add_argument("--fresh", action="append", default=[], metavar="STAGE",
                   help="let a resumable stage (pretrain, cpt, synth) whose result keys or inputs changed start over: "
                        "its earlier output is moved aside to <folder>.prev-<UTC time>, never deleted (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list each stage with run/skip and why; run nothing")
    p.add_argument("--no-report", action="store_true", help="do not write <run.dir>/report afterwards")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    setup_logging(args.log_level)
    config, overrides = args.config, list(args.overrides)
    if config is None:
        config = args.config_pos
    elif args.config_pos is not None:
        overrides.insert(0, args.config_pos)
    if config is None:
        build_parser().error("a config is required (CONFIG or --config FILE)")
    if args.job and (args.dry_run or args.fresh):
        build_parser().error("--job runs what its chain decided: no --dry-run or --fresh")
    t0 = time.perf_counter()
    try:
        cfg = load_config(config, overrides)
        fresh = {name for value in args.fresh for name in value.split(",") if name}
        if args.job:
            decisions = run_job(cfg, args.job)
        else:
            decisions = run_pipeline(cfg, args.start, args.only, args.dry_run, fresh)
        print(describe(decisions))
        if args.dry_run:
            print(training_plans(cfg, decisions))
        if not args.dry_run and not args.no_report and not args.job:
            print(f"report: {write_report(cfg)}")
    except FactoryError as e:
        return report(e)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if not args.dry_run:
        log.info("pipeline: finished in %.1fs", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    exit_process(main())
