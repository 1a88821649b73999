"""What a stage declares about itself, once, next to its code.

A stage module (`*_stage.py`) defines `plan` and `run` and a `Stage` constant naming its verb, its config
section, the sections that change its result, the stages it reads from, whether it resumes and how it
launches. `factory/registry.py` lists the stages in chain order; the CLI, the pipeline, the launcher, the
config and the report are all built from that list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, TypeVar, cast

from factory.config_base import CoreConfig
from factory.errors import ConfigError
from factory.manifest import RunManifest
from factory.outputs import Outputs
from factory.schema import Section


@dataclass
class Plan:
    """What a stage would read and write, shown by --dry-run and checked before running."""

    output_dir: Path
    reads: list[Path] = field(default_factory=list)
    writes: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Lines about a config that runs but is likely a mistake: printed by --dry-run, logged when the stage runs."""
    complete: str = ""
    """Set when the output already is what the config asks for (a finished training run): why. The runner
    then runs nothing and keeps the earlier manifest."""


SectionT = TypeVar("SectionT", bound=Section)
PlanT = TypeVar("PlanT", bound=Plan)


class Launch(enum.Enum):
    """How `python -m factory.launch` starts a stage."""

    ONE_PROCESS = "one process"
    MEGATRON = "torchrun; the ranks form Megatron's TP/PP/CP/EP x data-parallel layout"
    DATA_PARALLEL = "torchrun; every rank data parallel (TRL; DeepSpeed ZeRO-3 when configured)"


@dataclass(frozen=True)
class SectionSpec:
    """A top-level config section a stage owns: its key, its pydantic type and its help line."""

    key: str
    type: type[Section]
    help: str


@dataclass(frozen=True)
class Stage(Generic[SectionT, PlanT]):
    """One verb of `python -m factory.stage` and one step of the pipeline, typed by its own section and its plan
    (a stage whose run needs more than paths and notes subclasses `Plan`: what `plan` found, `run` reads)."""

    name: str
    """The verb."""
    help: str
    """One line for `--help`."""
    sections: tuple[SectionSpec, ...]
    """The config sections it owns; the first is its own (`<name>:` unless the verb is a keyword)."""
    plan: Callable[[CoreConfig], PlanT]
    run: Callable[[CoreConfig, PlanT, RunManifest], None]
    outputs: Callable[[CoreConfig], Outputs]
    """Where it writes (factory/outputs.py): what later stages, the pipeline and the launcher read."""
    result_sections: tuple[str, ...]
    """Config sections whose values change its result (hashed into its pipeline fingerprint)."""
    after: tuple[str, ...] = ()
    """Stages whose outputs it may read; they come before it in the chain."""
    resumes: bool = False
    """Continues from what it finds in its output folder."""
    launch: Launch = Launch.ONE_PROCESS
    uses_gpu: bool = False
    """Asks the scheduler for GPUs (the one-process stages that do not are disk- or CPU-bound)."""
    job_array: bool = False
    """May run as a Slurm job array of independent tasks (`launch.array`)."""
    cpus: Callable[[CoreConfig], int] | None = None
    """CPUs its one process keeps busy (its local workers): its Slurm job's `--cpus-per-task` unless `launch`
    sets one."""
    checks: Callable[[CoreConfig], list[str]] | None = None
    """Rules across sections, run when one of its sections is present; one line per problem."""

    @property
    def section(self) -> str:
        return self.sections[0].key

    def section_of(self, cfg: CoreConfig) -> SectionT:
        """The stage's own section of `cfg`; a ConfigError when the config has none."""
        value = getattr(cfg, self.section, None)
        if value is None:
            own = self.sections[0]
            raise ConfigError(f"{self.name}: the config has no '{own.key}' section ({own.help})")
        return cast(SectionT, value)

    def configured(self, cfg: CoreConfig) -> bool:
        """Whether `cfg` has any section this stage owns."""
        return any(getattr(cfg, spec.key, None) is not None for spec in self.sections)
