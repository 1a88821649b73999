"""Where a training run is: iteration, data position, tokens and lineage; saved in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    """The part of a run that is not a tensor; `meta()` is what each checkpoint's `factory` dict records."""

    iteration: int = 0
    consumed_samples: int = 0
    """Samples of the training dataset consumed so far (the data position a resume continues from)."""
    tokens_before: int = 0
    """Tokens the starting checkpoint had seen (its lineage)."""
    lineage: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """What the training dataset was built from (blend, phase, seed, split, sequence length, samples)."""

    def tokens_seen(self, tokens_per_iter: int) -> int:
        return self.tokens_before + self.iteration * tokens_per_iter

    def advance(self, global_batch_size: int) -> None:
        self.iteration += 1
        self.consumed_samples += global_batch_size

    def meta(self, stage: str, tokens_per_iter: int, lr: float, phase: str) -> dict[str, Any]:
        return {"stage": stage, "consumed_samples": self.consumed_samples,
                "tokens_seen": self.tokens_seen(tokens_per_iter), "tokens_before": self.tokens_before,
                "final_lr": lr, "phase": phase, "lineage": self.lineage, "data": self.data}

    @classmethod
    def resumed(cls, iteration: int, consumed_samples: int, meta: dict[str, Any]) -> TrainState:
        """The state a run's own checkpoint saved."""
        return cls(iteration=iteration, consumed_samples=consumed_samples,
                   tokens_before=int(meta.get("tokens_before", 0)), lineage=list(meta.get("lineage", [])),
                   data=dict(meta.get("data", {})))

    @classmethod
    def started_from(cls, source_path: str, meta: dict[str, Any]) -> TrainState:
        """A new run continuing a checkpoint of another run: its tokens and lineage carried over."""
        tokens = int(meta.get("tokens_seen", 0))
        step = {"stage": meta.get("stage", "?"), "checkpoint": source_path, "tokens_seen": tokens}
        if "upcycle" in meta:
            step["upcycle"] = meta["upcycle"]
        return cls(tokens_before=tokens, lineage=list(meta.get("lineage", [])) + [step])
