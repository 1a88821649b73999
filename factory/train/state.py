"""Where a training run is: iteration, data position, tokens and lineage; saved in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from factory.train.checkpoint_meta import CheckpointMeta, LineageStep


@dataclass
class TrainState:
    """The part of a run that is not a tensor; `meta()` is what each checkpoint records (checkpoint_meta)."""

    iteration: int = 0
    consumed_samples: int = 0
    """Samples of the training dataset consumed so far (the data position a resume continues from)."""
    tokens_before: int = 0
    """The lineage's tokens at the checkpoint this run started from."""
    lineage: tuple[LineageStep, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    """What the training dataset was built from (blend, phase, seed, split, sequence length, samples)."""

    def run_tokens(self, tokens_per_iter: int) -> int:
        return self.iteration * tokens_per_iter

    def lineage_tokens(self, tokens_per_iter: int) -> int:
        return self.tokens_before + self.run_tokens(tokens_per_iter)

    def advance(self, global_batch_size: int) -> None:
        self.iteration += 1
        self.consumed_samples += global_batch_size

    def meta(self, stage: str, tokens_per_iter: int, *, final_lr: float, peak_lr: float, min_lr: float,
             phase: str) -> CheckpointMeta:
        return CheckpointMeta(stage=stage, consumed_samples=self.consumed_samples,
                              lineage_tokens=self.lineage_tokens(tokens_per_iter),
                              run_tokens=self.run_tokens(tokens_per_iter), final_lr=final_lr, peak_lr=peak_lr,
                              min_lr=min_lr, phase=phase, data=dict(self.data), lineage=self.lineage)

    @classmethod
    def resumed(cls, iteration: int, meta: CheckpointMeta) -> TrainState:
        """The state a run's own checkpoint saved."""
        return cls(iteration=iteration, consumed_samples=meta.consumed_samples, tokens_before=meta.tokens_before,
                   lineage=meta.lineage, data=dict(meta.data))

    @classmethod
    def started_from(cls, source: CheckpointMeta, checkpoint: str, iteration: int) -> TrainState:
        """A new run continuing a checkpoint of another run: its tokens and lineage carried over."""
        return cls(tokens_before=source.lineage_tokens, lineage=source.lineage_from_here(checkpoint, iteration))
