"""Where each stage writes, declared once: the typed outputs its readers, the pipeline and the launcher ask for.

A stage's folder is its own section's `output_dir`, else `<run.dir>/<stage>` (plus a fixed subfolder for the
stages whose output is a checkpoint root or an HF folder). Every default input of a later stage is one of
these, so `tokenizer.output_dir=X` moves what pack, the training stages, export, synth and eval read with it.
Each `Stage` in the registry names its function here (`Stage.outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factory.config_base import CoreConfig


@dataclass(frozen=True)
class Outputs:
    dir: Path
    """The folder the stage owns (its manifest, owner mark and lock are there or beside it)."""


@dataclass(frozen=True)
class TokenizerOutputs(Outputs):
    @property
    def model_file(self) -> Path:
        return self.dir / "tokenizer.model"


@dataclass(frozen=True)
class PackOutputs(Outputs):
    @property
    def blend_file(self) -> Path:
        return self.dir / "blend.json"


@dataclass(frozen=True)
class CheckpointOutputs(Outputs):
    checkpoints: Path
    """The Megatron checkpoint root (tracker and iter_NNNNNNN folders)."""


@dataclass(frozen=True)
class ImportOutputs(CheckpointOutputs):
    @property
    def tokenizer_dir(self) -> Path:
        return self.dir / "tokenizer"


def _declared(cfg: CoreConfig, section: str) -> Path | None:
    """The section's `output_dir` when the config has the section and sets it."""
    return getattr(getattr(cfg, section, None), "output_dir", None)


def tokenizer(cfg: CoreConfig) -> TokenizerOutputs:
    return TokenizerOutputs(_declared(cfg, "tokenizer") or cfg.stage_dir("tokenizer"))


def data(cfg: CoreConfig) -> Outputs:
    return Outputs(_declared(cfg, "data") or cfg.stage_dir("data"))


def pack(cfg: CoreConfig) -> PackOutputs:
    return PackOutputs(_declared(cfg, "pack") or cfg.stage_dir("pack"))


def synth(cfg: CoreConfig) -> Outputs:
    return Outputs(_declared(cfg, "synth") or cfg.stage_dir("synth"))


def pretrain(cfg: CoreConfig) -> CheckpointOutputs:
    return _training(cfg, "pretrain")


def cpt(cfg: CoreConfig) -> CheckpointOutputs:
    return _training(cfg, "cpt")


def _training(cfg: CoreConfig, name: str) -> CheckpointOutputs:
    folder = _declared(cfg, name) or cfg.stage_dir(name)
    return CheckpointOutputs(folder, checkpoints=folder / "checkpoints")


def upcycle(cfg: CoreConfig) -> CheckpointOutputs:
    """`upcycle.output_dir` names the checkpoint root itself."""
    root = _declared(cfg, "upcycle") or cfg.stage_dir("upcycle") / "checkpoints"
    return CheckpointOutputs(root, checkpoints=root)


def hf_import(cfg: CoreConfig) -> ImportOutputs:
    """`hf_import.output_dir` names the checkpoint root; the stage's folder (with `tokenizer/`) is its parent."""
    root = _declared(cfg, "hf_import") or cfg.stage_dir("import") / "checkpoints"
    return ImportOutputs(root.parent, checkpoints=root)


def export(cfg: CoreConfig) -> Outputs:
    """The HF folder."""
    return Outputs(_declared(cfg, "export") or cfg.stage_dir("export") / "hf")


def sft(cfg: CoreConfig) -> Outputs:
    """The HF folder."""
    return Outputs(_declared(cfg, "sft") or cfg.stage_dir("sft") / "hf")


def dpo(cfg: CoreConfig) -> Outputs:
    """The HF folder."""
    return Outputs(_declared(cfg, "dpo") or cfg.stage_dir("dpo") / "hf")


def evaluation(cfg: CoreConfig) -> Outputs:
    return Outputs(_declared(cfg, "eval") or cfg.stage_dir("eval"))
