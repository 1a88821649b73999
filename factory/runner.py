"""Runs one stage: plan, dry-run or run, write the manifest."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import yaml

from factory.config_base import CoreConfig
from factory.errors import ConfigError, OutputError
from factory.io import os_error_line, output_problem
from factory.lock import FolderLock
from factory.manifest import MANIFEST_NAME, RunManifest, is_main_process
from factory.ownership import marked, overlap_problems, ownership_problem
from factory.stage_api import Launch, Plan, Stage

log = logging.getLogger(__name__)


def describe_dry_run(stage: Stage, cfg: CoreConfig, plan: Plan) -> str:
    """Resolved config, plan and parameter counts as printed by --dry-run."""
    from factory.model.build import (
        parameter_counts,  # torch: only a dry run with a model section pays for it
    )

    lines = [f"# stage: {stage.name}", "# resolved config", yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()]
    if cfg.model is not None:
        lines.append(f"# parameters: {parameter_counts(cfg.model, cfg.parallel.tensor).describe()}")
    lines.append(f"# launch: {stage.launch.value}")
    lines.append(f"# output dir: {plan.output_dir}")
    lines += [f"# reads:  {p}" for p in plan.reads]
    lines += [f"# writes: {p}" for p in plan.writes]
    lines += [f"# note:   {n}" for n in plan.notes]
    lines += [f"# warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def run_stage(stage: Stage, cfg: CoreConfig, dry_run: bool = False) -> RunManifest | None:
    """Plan the stage; print the plan on dry-run, otherwise run it and write its manifest."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if stage.launch is Launch.ONE_PROCESS and world > 1:
        raise ConfigError(f"{stage.name}: runs in one process (WORLD_SIZE is {world}); launch it without torchrun")
    plan = stage.plan(cfg)
    check_output(stage, plan)
    if dry_run:
        print(describe_dry_run(stage, cfg, plan))
        return None
    earlier = plan.output_dir / MANIFEST_NAME
    if plan.complete and (kept := _earlier_manifest(earlier)) is not None:
        log.info("%s; nothing to do, %s kept as it is", plan.complete, earlier)
        return kept
    if problem := output_problem(plan.output_dir):
        raise OutputError(f"{stage.name}: {problem}; nothing written")
    for warning in plan.warnings:
        log.warning("%s: %s", stage.name, warning)
    manifest = RunManifest(stage.name, cfg.to_dict(), plan.output_dir)
    try:
        with owning(stage, plan.output_dir, cfg.run.name):
            stage.run(cfg, plan, manifest)
            if stage.resumes and (before := _earlier_manifest(earlier)) is not None:
                manifest.continues(before.to_dict())
            path = manifest.write()
    except OSError as e:
        raise OutputError(f"{stage.name}: {os_error_line(e, plan.output_dir)}") from None
    log.info("%s: done in %.1fs; manifest %s", stage.name, manifest.to_dict()["wall_seconds"], path)
    return manifest


def check_output(stage: Stage, plan: Plan) -> None:
    """Refuse, before anything runs, an output folder the stage does not own or that overlaps its inputs."""
    own_names = {p.relative_to(plan.output_dir).parts[0] for p in plan.writes if plan.output_dir in p.parents}
    problem = ownership_problem(plan.output_dir, stage.name, f"{stage.section}.output_dir", own_names | {MANIFEST_NAME})
    problems = ([f"{stage.name}: {problem}"] if problem else []) + overlap_problems(
        stage.name, [plan.output_dir, *plan.writes], plan.reads)
    if problems:
        raise ConfigError(problems)


def lock_path(folder: Path) -> Path:
    """The lock of an output folder lies beside it, so it outlives a replacement of the folder."""
    return folder.with_name(f".{folder.name}.lock")


@contextlib.contextmanager
def owning(stage: Stage, folder: Path, run_name: str) -> Iterator[None]:
    """Hold `folder`'s lock and owner mark while the stage writes it (rank 0 of a launch; other ranks write
    only what rank 0's run of the stage asks them to)."""
    if not is_main_process():
        yield
        return
    made = [p for p in folder.parents if not p.exists()]
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(lock_path(folder), f"{stage.name} output {folder}"), marked(folder, stage.name, run_name):
            yield
    finally:
        for p in made:  # innermost first; only folders still empty
            with contextlib.suppress(OSError):
                p.rmdir()


def _earlier_manifest(path: Path) -> RunManifest | None:
    """The manifest an earlier run left, or None when there is none or it cannot be read (one warning)."""
    if not path.is_file():
        return None
    try:
        return RunManifest.read(path)
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable (%s); the stage runs and writes it anew", path, type(e).__name__)
        return None
