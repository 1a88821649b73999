"""What a checkpoint is, as `checkpoint.read_info` reads it from the common state: its own module, so that the
modules `checkpoint` builds on (`checkpoint_optimizer`) can name the type without importing `checkpoint`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig
from factory.train.checkpoint_meta import CheckpointMeta


@dataclass
class CheckpointInfo:
    """What a checkpoint is, read from its common state without loading tensors."""

    path: Path
    iteration: int
    model: ModelConfig
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)
    """Its run, data position, tokens and lineage (the common state's `factory` dict, typed)."""
    scheduler: dict[str, Any] | None = None
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """The layout it was saved at (Megatron-LM's `args`)."""
    content_metadata: dict[str, Any] | None = None
    """How its optimizer state is keyed (`checkpoint_optimizer.METADATA`); None before that format."""
