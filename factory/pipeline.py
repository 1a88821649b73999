"""`python -m factory.pipeline --config FILE`: run the stages a config lists, in order, skipping each
stage whose config sections, upstream stages and recorded inputs are unchanged since its last run.

State lives in `<run.dir>/pipeline.json` (per stage: fingerprint, status, manifest, times, error).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import registry
from factory.config import load_config
from factory.config_base import CoreConfig
from factory.errors import ConfigError, FactoryError, report
from factory.io import content_hash
from factory.logs import setup_logging
from factory.manifest import MANIFEST_NAME
from factory.report import write_report
from factory.run_state import load_state, now, save_state
from factory.runner import run_stage

log = logging.getLogger(__name__)


@dataclass
class Decision:
    stage: str
    action: str
    """run | skip | hold (not selected by --from/--only)"""
    reason: str
    fresh: bool = True
    """For a run: start from an empty output dir (False: let a resumable stage continue)."""


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def pipeline_stages(cfg: CoreConfig) -> list[str]:
    """The stages whose config section is present, in chain order."""
    return [s.name for s in registry.CHAIN if getattr(cfg, s.section) is not None]


def fingerprints(cfg: CoreConfig, stages: list[str]) -> dict[str, dict[str, Any]]:
    """Per stage: hashes of the sections it reads, the fingerprints of its upstream stages, and their hash."""
    raw, out = cfg.to_dict(), {}
    for name in stages:
        stage = registry.STAGES[name]
        sections = {s: _sha(raw.get(s)) for s in stage.result_sections}
        after = {d: out[d]["fingerprint"] for d in stage.after if d in out}
        out[name] = {"sections": sections, "after": after, "fingerprint": _sha([name, sections, after])}
    return out


def _changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def _staleness(rec: dict[str, Any] | None, fp: dict[str, Any]) -> tuple[str, bool] | None:
    """Why a stage must run (and whether from scratch), or None when it is up to date."""
    if rec is None:
        return "no record of a previous run", False
    if rec.get("fingerprint") != fp["fingerprint"]:
        keys = _changed(rec.get("sections", {}), fp["sections"])
        if keys:
            return f"config changed: {', '.join(keys)}", True
        return f"upstream changed: {', '.join(_changed(rec.get('after', {}), fp['after']))}", True
    if rec.get("status") != "done":
        return f"last run {rec.get('status')}; continuing it", False
    manifest = Path(rec.get("manifest", ""))
    if not manifest.is_file():
        return f"output missing: {manifest}", True
    data = json.loads(manifest.read_text(encoding="utf-8"))
    for out in data.get("outputs", []):
        if not Path(out["path"]).exists():
            return f"output missing: {out['path']}", True
    for inp in data.get("inputs", []):
        path = Path(inp["path"])
        if not path.exists() or content_hash(path) != inp["sha256"]:
            return f"input changed: {path}", True
    return None


def decide(cfg: CoreConfig, state: dict[str, Any], start: str | None = None,
           only: str | None = None) -> list[Decision]:
    """Run or skip, and why, for every stage of the config, in order."""
    stages = pipeline_stages(cfg)
    for flag, name in (("--from", start), ("--only", only)):
        if name is not None and name not in stages:
            raise ConfigError(f"{flag} {name}: not a stage of this config (stages: {', '.join(stages)})")
    fps, records = fingerprints(cfg, stages), state.get("stages", {})
    decisions: list[Decision] = []
    running: set[str] = set()
    for i, name in enumerate(stages):
        if only is not None or start is not None:
            chosen = name == only if only is not None else i >= stages.index(start)
            flag = "--only" if only is not None else "--from"
            why = None if chosen else _staleness(records.get(name), fps[name])
            d = (Decision(name, "run", f"selected by {flag}") if chosen else
                 Decision(name, "hold", f"not selected by {flag}" + (f"; not up to date ({why[0]})" if why else "")))
        elif upstream := [a for a in registry.STAGES[name].after if a in running]:
            d = Decision(name, "run", f"upstream runs: {', '.join(upstream)}")
        elif why := _staleness(records.get(name), fps[name]):
            d = Decision(name, "run", why[0], fresh=why[1])
        else:
            d = Decision(name, "skip", "up to date")
        if d.action == "run":
            running.add(name)
        decisions.append(d)
    return decisions


def clear_outputs(cfg: CoreConfig, name: str) -> None:
    """Empty a resumable stage's output dir so that it starts over instead of resuming an old run."""
    out = registry.STAGES[name].plan(cfg).output_dir
    if not out.exists():
        return
    run_dir = cfg.run.dir.resolve()
    if out.resolve() == run_dir or out.resolve() in run_dir.parents:
        raise ConfigError(f"{name}: output dir {out} holds the run folder; give the stage its own output_dir")
    log.info("pipeline: %s: removing %s (an earlier run with another config; starting fresh)", name, out)
    shutil.rmtree(out)


def run_one(cfg: CoreConfig, state: dict[str, Any], d: Decision, fp: dict[str, Any]) -> None:
    """Run one stage, recording its status in pipeline.json before and after."""
    stage = registry.STAGES[d.stage]
    rec = {**fp, "status": "running", "reason": d.reason, "started_at": now()}
    state["stages"][d.stage] = rec
    save_state(cfg.run.dir, state)
    t0 = time.perf_counter()
    try:
        if d.fresh and stage.resumes:
            clear_outputs(cfg, d.stage)
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


def run_pipeline(cfg: CoreConfig, start: str | None = None, only: str | None = None,
                 dry_run: bool = False) -> list[Decision]:
    """Decide, then run the stages that need it; raises StageFailure naming the stage that failed."""
    state = load_state(cfg.run.dir)
    decisions = decide(cfg, state, start, only)
    if dry_run:
        return decisions
    fps = fingerprints(cfg, pipeline_stages(cfg))
    state.setdefault("stages", {})
    for i, d in enumerate(decisions, 1):
        log.info("pipeline: [%d/%d] %s: %s (%s)", i, len(decisions), d.stage, d.action, d.reason)
        if d.action == "run":
            try:
                run_one(cfg, state, d, fps[d.stage])
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
        decisions = run_pipeline(cfg, args.start, args.only, args.dry_run)
        print(describe(decisions))
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
