"""The `factory` metadata of a checkpoint, typed: written by `to_dict` and read by `from_dict`, nowhere else.

Two token counts, never one word for both: `lineage_tokens` are the tokens the weights have been trained on since
they were initialized (every earlier stage included: a cpt from an upcycled model counts the dense run's
tokens), `run_tokens` those of the run that wrote the checkpoint. A training run's manifest metrics use the same
two names. `from_dict` also reads checkpoints written before these names (`tokens_seen` for the lineage's
tokens, `tokens_before` for the tokens before the run, an import's `source: hf`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from factory.model.config import ModelConfig


@dataclass(frozen=True)
class UpcycleRecord:
    """How the upcycle stage made an MoE checkpoint from a dense one (factory/upcycle/config.py)."""

    mode: str
    granularity: int = 1
    router_init: str = "random"
    drop_fraction: float = 0.0
    noise_std: float = 0.0
    source: str = ""
    """The dense checkpoint's iteration folder."""
    source_iteration: int | None = None


@dataclass(frozen=True)
class HfOrigin:
    """The Hugging Face folder an imported checkpoint was converted from."""

    hf_dir: str
    architecture: str


@dataclass(frozen=True)
class VocabExtension:
    """Pieces appended to an imported model's vocabulary (hf_import.extend_vocab)."""

    added: int
    tokenizer_dir: str


@dataclass(frozen=True)
class LineageStep:
    """A checkpoint that a later stage started from."""

    stage: str
    checkpoint: str
    lineage_tokens: int
    """Its lineage's tokens: what the weights had been trained on when they were saved there."""
    iteration: int | None = None
    upcycle: UpcycleRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LineageStep:
        upcycle = raw.get("upcycle")
        return cls(stage=str(raw.get("stage", "?")), checkpoint=str(raw.get("checkpoint", "")),
                   lineage_tokens=int(raw.get("lineage_tokens", raw.get("tokens_seen", 0))),
                   iteration=raw.get("iteration"), upcycle=UpcycleRecord(**upcycle) if upcycle else None)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint records about the run that wrote it and the runs before it (common state `factory`,
    beside the model config)."""

    stage: str = "?"
    """The stage that wrote it: pretrain, cpt, upcycle, import."""
    consumed_samples: int = 0
    """Training samples of the run consumed so far (the data position a resume continues from)."""
    lineage_tokens: int = 0
    """Tokens the weights were trained on, every earlier stage included."""
    run_tokens: int = 0
    """Tokens the run that wrote this checkpoint trained on (0 for upcycle and import)."""
    final_lr: float | None = None
    """The LR of the last step (a cpt's default peak LR)."""
    peak_lr: float | None = None
    min_lr: float | None = None
    phase: str | None = None
    """The blend phase of the last step."""
    data: dict[str, Any] = field(default_factory=dict)
    """What the training data was built from (factory/train/phases.py `data_identity`, and the last batch's
    fingerprint); a resume refuses other data."""
    lineage: tuple[LineageStep, ...] = ()
    """The checkpoints this one descends from, oldest first."""
    upcycle: UpcycleRecord | None = None
    imported_from: HfOrigin | None = None
    vocab_extension: VocabExtension | None = None
    has_optimizer: bool = False
    world_size: int | None = None
    """Ranks that saved per-rank RNG state; None when none was saved."""

    @property
    def tokens_before(self) -> int:
        """The lineage's tokens when this run started."""
        return self.lineage_tokens - self.run_tokens

    def lineage_from_here(self, checkpoint: str, iteration: int) -> tuple[LineageStep, ...]:
        """The lineage of a new run that starts from this checkpoint (at `checkpoint`, `iteration`)."""
        return self.lineage + (LineageStep(self.stage, checkpoint, self.lineage_tokens, iteration, self.upcycle),)

    def to_dict(self) -> dict[str, Any]:
        out = _without_none(asdict(self))
        out["lineage"] = [step.to_dict() for step in self.lineage]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckpointMeta:
        """The metadata of `raw` (a checkpoint's `factory` dict, of this format or an earlier one)."""
        lineage = tuple(LineageStep.from_dict(step) for step in raw.get("lineage") or ())
        lineage_tokens = int(raw.get("lineage_tokens", raw.get("tokens_seen", 0)))
        if "run_tokens" in raw:
            run_tokens = int(raw["run_tokens"])
        else:  # earlier format: the tokens before the run, or (upcycle wrote none) those of its source
            before = raw.get("tokens_before", lineage[-1].lineage_tokens if lineage else 0)
            run_tokens = lineage_tokens - int(before)
        upcycle, imported, vocab = raw.get("upcycle"), raw.get("imported_from"), raw.get("vocab_extension")
        if imported is None and raw.get("source") == "hf":
            imported = {"hf_dir": raw.get("hf_dir", ""), "architecture": raw.get("hf_architecture", "")}
        if vocab is not None and "from" in vocab:
            vocab = {"added": vocab["added"], "tokenizer_dir": vocab["from"]}
        return cls(stage=str(raw.get("stage", "?")), consumed_samples=int(raw.get("consumed_samples", 0)),
                   lineage_tokens=lineage_tokens, run_tokens=run_tokens, final_lr=raw.get("final_lr"),
                   peak_lr=raw.get("peak_lr"), min_lr=raw.get("min_lr"), phase=raw.get("phase"),
                   data=dict(raw.get("data") or {}), lineage=lineage,
                   upcycle=UpcycleRecord(**upcycle) if upcycle else None,
                   imported_from=HfOrigin(**imported) if imported else None,
                   vocab_extension=VocabExtension(**vocab) if vocab else None,
                   has_optimizer=bool(raw.get("has_optimizer", False)), world_size=raw.get("world_size"))


def factory_state(meta: CheckpointMeta | None, model_cfg: ModelConfig, *, has_optimizer: bool,
                  world_size: int | None) -> dict[str, Any]:
    """A checkpoint's `factory` dict: `meta` with what the save itself knows, and the model config."""
    meta = replace(meta or CheckpointMeta(), has_optimizer=has_optimizer, world_size=world_size)
    return {**meta.to_dict(), "model": model_cfg.model_dump(mode="json")}


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    """Unset optional fields are left out of the stored dict (as earlier checkpoints left them out)."""
    return {k: v for k, v in fields.items() if v is not None}
