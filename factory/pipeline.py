"""`python -m factory.pipeline --config FILE`: run the stages a config lists, in order, skipping each
stage whose config sections, upstream stages and recorded inputs are unchanged since its last run.

State lives in `<run.dir>/pipeline.json` (per stage: fingerprint, status, manifest, times, error).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import registry
from factory.config import load_config
from factory.config_base import CoreConfig
from factory.errors import ConfigError, FactoryError, OutputError, report
from factory.fingerprint import changed_keys, stage_fingerprint
from factory.identity import identity
from factory.io import move_aside, os_error_line
from factory.logs import setup_logging
from factory.lock import FolderLock
from factory.manifest import MANIFEST_NAME, read_manifest
from factory.report import write_report
from factory.run_state import load_state, now, save_state
from factory.runner import run_stage
from factory.stage_api import Launch

log = logging.getLogger(__name__)


@dataclass
class Decision:
    stage: str
    action: str
    """run | skip | hold (not selected by --from/--only)"""
    reason: str
    fresh: bool = False
    """For a run: the earlier output was made with other result keys or inputs, so it cannot be continued; a
    resumable stage then needs `--fresh STAGE`, which moves that output aside before starting over."""


def pipeline_stages(cfg: CoreConfig) -> list[str]:
    """The stages whose config section is present, in chain order."""
    return [s.name for s in registry.CHAIN if getattr(cfg, s.section) is not None]


def fingerprints(cfg: CoreConfig, stages: list[str]) -> dict[str, dict[str, Any]]:
    """Per stage, in chain order: its fingerprint record (factory/fingerprint.py)."""
    out: dict[str, dict[str, Any]] = {}
    for name in stages:
        out[name] = stage_fingerprint(cfg, registry.STAGES[name], out)
    return out


def _staleness(rec: dict[str, Any] | None, fp: dict[str, Any]) -> tuple[str, bool] | None:
    """Why a stage must run and whether its earlier output is of another config (fresh), or None when up to date."""
    if rec is None:
        return "no record of a previous run", False
    if "values" not in rec:
        return "recorded by an older version of the factory; continuing it", False
    if rec.get("fingerprint") != fp["fingerprint"]:
        keys = changed_keys(rec["values"], fp["values"])
        if keys:
            return f"config changed: {', '.join(keys)}", True
        return f"upstream changed: {', '.join(changed_keys(rec.get('after', {}), fp['after']))}", True
    if keys := changed_keys(rec.get("continues", {}), fp["continues"]):
        old, new = rec.get("continues", {}), fp["continues"]
        return "continues: " + ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys), False
    if rec.get("status") != "done":
        return f"last run {rec.get('status')}; continuing it", False
    manifest = Path(rec.get("manifest", ""))
    if not manifest.is_file():
        return f"output missing: {manifest}", True
    try:
        data = read_manifest(manifest)
    except FactoryError as e:
        return f"{e}; running it again", False
    for out in data.get("outputs", []):
        if not Path(out["path"]).exists():
            return f"output missing: {out['path']}", True
    for inp in data.get("inputs", []):
        path = Path(inp["path"])
        if not path.exists() or identity(path) != inp["sha256"]:
            return f"input changed: {path}", True
    return None


def check_selection(cfg: CoreConfig, start: str | None = None, only: str | None = None,
                    fresh: set[str] | frozenset[str] = frozenset()) -> None:
    """Every stage named by --from, --only and --fresh is a stage of the config."""
    stages = pipeline_stages(cfg)
    for flag, name in (("--from", start), ("--only", only)):
        if name is not None and name not in stages:
            raise ConfigError(f"{flag} {name}: not a stage of this config (stages: {', '.join(stages)})")
    if unknown := sorted(set(fresh) - set(stages)):
        raise ConfigError(f"--fresh {','.join(unknown)}: not a stage of this config")


def decide(cfg: CoreConfig, state: dict[str, Any], start: str | None = None,
           only: str | None = None) -> list[Decision]:
    """Run or skip, and why, for every stage of the config, in order."""
    stages = pipeline_stages(cfg)
    check_selection(cfg, start, only)
    fps, records = fingerprints(cfg, stages), state.get("stages", {})
    decisions: list[Decision] = []
    running: set[str] = set()
    for i, name in enumerate(stages):
        why = _staleness(records.get(name), fps[name])
        if only is not None or start is not None:
            chosen = name == only if only is not None else i >= stages.index(start)
            flag = "--only" if only is not None else "--from"
            d = (Decision(name, "run", f"selected by {flag}", fresh=bool(why and why[1])) if chosen else
                 Decision(name, "hold", f"not selected by {flag}" + (f"; not up to date ({why[0]})" if why else "")))
        elif upstream := [a for a in registry.STAGES[name].after if a in running]:
            d = Decision(name, "run", f"upstream runs: {', '.join(upstream)}", fresh=True)
        elif why:
            d = Decision(name, "run", why[0], fresh=why[1])
        else:
            d = Decision(name, "skip", "up to date")
        if d.action == "run":
            running.add(name)
        decisions.append(d)
    return decisions


def output_folder(cfg: CoreConfig, name: str) -> Path:
    """Where a resumable stage keeps what it continues from: its section's output_dir or <run.dir>/<stage>."""
    stage = registry.STAGES[name]
    return getattr(stage.section_of(cfg), "output_dir", None) or cfg.stage_dir(name)


def moved_from(cfg: CoreConfig, state: dict[str, Any]) -> str | None:
    """The run folder pipeline.json was written in, when that is not `cfg.run.dir` (a moved or copied run)."""
    recorded = state.get("run_dir")
    return recorded if recorded and recorded != str(cfg.run.dir.resolve()) else None


def fresh_starts(cfg: CoreConfig, decisions: list[Decision], fresh: set[str], moved: str | None = None) -> list[str]:
    """Resumable stages that must start over on an earlier output; a ConfigError unless each is in `fresh`."""
    blocked, allowed = [], []
    why_moved = (f" (pipeline.json was written for run.dir={moved}: the run folder was moved or copied, so every "
                 f"${{run.dir}} path of the config changed)") if moved else ""
    for d in decisions:
        if d.action != "run" or not d.fresh or not registry.STAGES[d.stage].resumes:
            continue
        out = output_folder(cfg, d.stage)
        if not (out.is_dir() and any(out.iterdir())):
            continue
        if d.stage in fresh:
            allowed.append(d.stage)
        else:
            blocked.append(f"{d.stage}: {d.reason}{why_moved}; its earlier output {out} cannot be continued with this config. "
                           f"Nothing was run or deleted: pass --fresh {d.stage} to move it aside (to "
                           f"{out.name}.prev-<UTC time>) and start over, or restore the earlier config")
    if blocked:
        raise ConfigError(blocked)
    return allowed


def run_one(cfg: CoreConfig, state: dict[str, Any], d: Decision, fp: dict[str, Any], start_over: bool) -> None:
    """Run one stage, recording its status in pipeline.json before and after."""
    stage = registry.STAGES[d.stage]
    rec = {**fp, "status": "running", "reason": d.reason, "started_at": now()}
    state["stages"][d.stage] = rec
    save_state(cfg.run.dir, state)
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
        save_state(cfg.run.dir, state)


def describe(decisions: list[Decision]) -> str:
    width = max(len(d.stage) for d in decisions)
    return "\n".join(f"{d.stage:<{width}}  {d.action:<4}  {d.reason}" for d in decisions)


def training_plans(cfg: CoreConfig, decisions: list[Decision]) -> str:
    """The plan notes of each training stage that would run: tokens and synthetic share per phase, LR
    schedule, per-GPU memory, GPU-hours."""
    lines = []
    for d in decisions:
        stage = registry.STAGES[d.stage]
        if d.action == "run" and stage.launch is Launch.MEGATRON:
            plan = stage.plan(cfg)
            lines += [f"# {d.stage}", *(f"  {note}" for note in plan.notes),
                      *(f"  warning: {warning}" for warning in plan.warnings)]
    return "\n".join(lines)


def run_pipeline(cfg: CoreConfig, start: str | None = None, only: str | None = None,
                 dry_run: bool = False, fresh: set[str] | frozenset[str] = frozenset()) -> list[Decision]:
    """Decide, then run the stages that need it; raises StageFailure naming the stage that failed.

    Before anything runs, a resumable stage that would have to start over on an earlier output is refused
    unless it is in `fresh`, whose earlier outputs are then moved aside (never deleted)."""
    check_selection(cfg, start, only, fresh)
    if dry_run:
        return _decide_and_check(cfg, start, only, fresh)[0]
    made = not cfg.run.dir.exists()
    try:
        cfg.run.dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"run.dir: {os_error_line(e, cfg.run.dir)}") from None
    try:
        with FolderLock(cfg.run.dir / LOCK_NAME, f"pipeline of {cfg.run.dir}"):
            return _run_decided(cfg, *_decide_and_check(cfg, start, only, fresh))
    finally:
        if made and not any(cfg.run.dir.iterdir()):
            cfg.run.dir.rmdir()


LOCK_NAME = ".pipeline.lock"
"""In the run folder: one pipeline at a time writes a run (factory/lock.py)."""


def _decide_and_check(cfg: CoreConfig, start: str | None, only: str | None,
                      fresh: set[str] | frozenset[str]) -> tuple[list[Decision], dict[str, Any], set[str]]:
    state = load_state(cfg.run.dir)
    decisions = decide(cfg, state, start, only)
    return decisions, state, set(fresh_starts(cfg, decisions, set(fresh), moved_from(cfg, state)))


def _run_decided(cfg: CoreConfig, decisions: list[Decision], state: dict[str, Any],
                 start_over: set[str]) -> list[Decision]:
    fps = fingerprints(cfg, pipeline_stages(cfg))
    state.setdefault("stages", {})
    for i, d in enumerate(decisions, 1):
        log.info("pipeline: [%d/%d] %s: %s (%s)", i, len(decisions), d.stage, d.action, d.reason)
        if d.action == "run":
            try:
                run_one(cfg, state, d, fps[d.stage], d.stage in start_over)
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
    t0 = time.perf_counter()
    try:
        cfg = load_config(config, overrides)
        fresh = {name for value in args.fresh for name in value.split(",") if name}
        decisions = run_pipeline(cfg, args.start, args.only, args.dry_run, fresh)
        print(describe(decisions))
        if args.dry_run:
            print(training_plans(cfg, decisions))
        if not args.dry_run and not args.no_report:
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
    sys.exit(main())
