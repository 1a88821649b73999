"""Runs one stage: load its module, plan, dry-run or run, write the manifest."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from factory.config import FactoryConfig
from factory.manifest import RunManifest

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a stage would read and write, shown by --dry-run and checked before running."""

    output_dir: Path
    reads: list[Path] = field(default_factory=list)
    writes: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class StageModule(Protocol):
    def plan(self, cfg: FactoryConfig) -> Plan: ...

    def run(self, cfg: FactoryConfig, plan: Plan, manifest: RunManifest) -> None: ...


@dataclass(frozen=True)
class StageSpec:
    """A CLI verb: its help line and the module implementing it."""

    help: str
    module: str

    def load(self) -> StageModule:
        return importlib.import_module(self.module)


def describe_dry_run(name: str, cfg: FactoryConfig, plan: Plan) -> str:
    """Resolved config, plan and parameter counts as printed by --dry-run."""
    from factory.model.build import parameter_counts

    lines = [f"# stage: {name}", "# resolved config", yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()]
    if cfg.model is not None:
        lines.append(f"# parameters: {parameter_counts(cfg.model, cfg.parallel.tensor).describe()}")
    lines.append(f"# output dir: {plan.output_dir}")
    lines += [f"# reads:  {p}" for p in plan.reads]
    lines += [f"# writes: {p}" for p in plan.writes]
    lines += [f"# note:   {n}" for n in plan.notes]
    return "\n".join(lines)


def run_stage(name: str, spec: StageSpec, cfg: FactoryConfig, dry_run: bool = False) -> RunManifest | None:
    """Plan the stage; print the plan on dry-run, otherwise run it and write its manifest."""
    module = spec.load()
    plan = module.plan(cfg)
    if dry_run:
        print(describe_dry_run(name, cfg, plan))
        return None
    manifest = RunManifest(name, cfg.to_dict(), plan.output_dir)
    module.run(cfg, plan, manifest)
    path = manifest.write()
    log.info("%s: done in %.1fs; manifest %s", name, manifest.to_dict()["wall_seconds"], path)
    return manifest
