"""Runs one stage: plan, dry-run or run, write the manifest."""

from __future__ import annotations

import logging
import os

import yaml

from factory.config_base import CoreConfig
from factory.errors import ConfigError, OutputError
from factory.io import os_error_line, output_problem
from factory.manifest import MANIFEST_NAME, RunManifest
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
    return "\n".join(lines)


def run_stage(stage: Stage, cfg: CoreConfig, dry_run: bool = False) -> RunManifest | None:
    """Plan the stage; print the plan on dry-run, otherwise run it and write its manifest."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if stage.launch is Launch.ONE_PROCESS and world > 1:
        raise ConfigError(f"{stage.name}: runs in one process (WORLD_SIZE is {world}); launch it without torchrun")
    plan = stage.plan(cfg)
    if dry_run:
        print(describe_dry_run(stage, cfg, plan))
        return None
    earlier = plan.output_dir / MANIFEST_NAME
    if plan.complete and earlier.is_file():
        log.info("%s; nothing to do, %s kept as it is", plan.complete, earlier)
        return RunManifest.read(earlier)
    if problem := output_problem(plan.output_dir):
        raise OutputError(f"{stage.name}: {problem}; nothing written")
    manifest = RunManifest(stage.name, cfg.to_dict(), plan.output_dir)
    try:
        stage.run(cfg, plan, manifest)
        if stage.resumes and earlier.is_file():
            manifest.continues(RunManifest.read(earlier).to_dict())
        path = manifest.write()
    except OSError as e:
        raise OutputError(f"{stage.name}: {os_error_line(e, plan.output_dir)}") from None
    log.info("%s: done in %.1fs; manifest %s", stage.name, manifest.to_dict()["wall_seconds"], path)
    return manifest
