"""What the pipeline would do: for each stage of a config, run or skip and why, decided from the config's
fingerprints and the run's record (`pipeline.json`); shared by the in-process pipeline (factory/pipeline.py)
and the Slurm chain (factory/launch/chain.py), so both make the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import registry
from factory.config_base import CoreConfig
from factory.errors import ConfigError, FactoryError
from factory.fingerprint import changed_keys, stage_fingerprint
from factory.identity import identity
from factory.manifest import read_manifest
from factory.run_state import load_state
from factory.stage_api import Launch


@dataclass
class Decision:
    """What the pipeline does with one stage, and why."""

    stage: str
    action: str
    """run | skip | hold (not selected by --from/--only)"""
    reason: str
    fresh: bool = False
    """For a run: the earlier output was made with other result keys or inputs, so it cannot be continued; a
    resumable stage then needs `--fresh STAGE`, which moves that output aside before starting over."""
    moved_aside: str | None = None
    """Where a Slurm chain moved the earlier output when it was submitted with `--fresh STAGE`."""


def pipeline_stages(cfg: CoreConfig) -> list[str]:
    """The stages whose config section is present, in chain order."""
    return [s.name for s in registry.CHAIN if getattr(cfg, s.section) is not None]


def fingerprints(cfg: CoreConfig, stages: list[str]) -> dict[str, dict[str, Any]]:
    """Per stage, in chain order: its fingerprint record (factory/fingerprint.py)."""
    out: dict[str, dict[str, Any]] = {}
    for name in stages:
        out[name] = stage_fingerprint(cfg, registry.STAGES[name], out)
    return out


def staleness(rec: dict[str, Any] | None, fp: dict[str, Any]) -> tuple[str, bool] | None:
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
        why = staleness(records.get(name), fps[name])
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
    return registry.STAGES[name].outputs(cfg).dir


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


def decide_and_check(cfg: CoreConfig, start: str | None = None, only: str | None = None,
                     fresh: set[str] | frozenset[str] = frozenset()) -> tuple[list[Decision], dict[str, Any], set[str]]:
    """The decisions, the record they were made from, and the stages whose earlier output `fresh` lets start
    over (a ConfigError for those that would have to without it)."""
    state = load_state(cfg.run.dir)
    decisions = decide(cfg, state, start, only)
    return decisions, state, set(fresh_starts(cfg, decisions, set(fresh), moved_from(cfg, state)))


def describe(decisions: list[Decision]) -> str:
    width = max(len(d.stage) for d in decisions)
    return "\n".join(f"{d.stage:<{width}}  {d.action:<4}  {d.reason}" for d in decisions)


def training_plans(cfg: CoreConfig, decisions: list[Decision]) -> str:
    """The plan notes and warnings of each training stage that would run: tokens and synthetic share per phase,
    LR schedule, per-GPU memory, GPU-hours, data repeated past 4 epochs."""
    lines = []
    for d in decisions:
        stage = registry.STAGES[d.stage]
        if d.action == "run" and stage.launch is Launch.MEGATRON:
            plan = stage.plan(cfg)
            lines += [f"# {d.stage}", *(f"  {note}" for note in plan.notes),
                      *(f"  warning: {warning}" for warning in plan.warnings)]
    return "\n".join(lines)
