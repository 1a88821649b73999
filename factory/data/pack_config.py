"""Config sections for packing JSONL into Megatron indexed datasets and for training blends."""

from __future__ import annotations

from pathlib import Path

from typing import Annotated

from pydantic import Field

from factory.schema import OPERATIONAL, Section, rule


class PackDataset(Section):
    """One JSONL corpus to tokenize into `<output_dir>/<name>_text_document.{bin,idx}`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Dataset name, used in file names and blends."""
    path: Path
    """Records to pack: JSONL (e.g. the data stage's kept.jsonl), text, parquet or an HF datasets folder."""
    text_field: str = "text"
    """Field of each record that holds the text."""


class PackConfig(Section):
    """Tokenize records with the project tokenizer into Megatron `.bin/.idx` datasets."""

    datasets: list[PackDataset] = Field(min_length=1)
    """Corpora to pack."""
    tokenizer_dir: Path | None = None
    """Folder with tokenizer.model; defaults to the tokenizer stage's output (`<run.dir>/tokenizer`)."""
    output_dir: Path | None = None
    """Defaults to `<run.dir>/pack`."""
    num_workers: Annotated[int, OPERATIONAL] = Field(default=2, ge=1)
    """Threads of SentencePiece's encode (unigram); gigatoken (BPE) and pyarrow use one thread per core."""
    task_bytes: Annotated[int, OPERATIONAL] = Field(default=16 << 20, ge=1)
    """JSONL bytes (whole lines) parsed, encoded and written at a time (bounds memory)."""
    append_eod: bool = True
    """Append the end-of-document token to every document."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        rule(out, not dupes, f"{prefix}.datasets", dupes, "dataset names must be unique")
        return out


class BlendEntry(Section):
    """A packed dataset in a phase, sampled by weight or by how many times it is repeated."""

    dataset: str
    """Name of a pack dataset."""
    weight: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Sampling weight (normalized within the phase)."""
    repeat: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Epochs over the dataset in this phase; its weight becomes tokens x repeat (LLM-jp-3 saw JA twice)."""


class BlendPhase(Section):
    """A curriculum phase (Tanuki's last phase was synthetic-only)."""

    name: str
    datasets: list[BlendEntry] = Field(min_length=1)


class BlendConfig(Section):
    """Training mixture by phase; resolved to Megatron's blend spec by the pack stage."""

    phases: list[BlendPhase] = Field(min_length=1)

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        for i, phase in enumerate(self.phases):
            for j, entry in enumerate(phase.datasets):
                rule(out, (entry.weight is None) != (entry.repeat is None),
                     f"{prefix}.phases[{i}].datasets[{j}]", entry.dataset, "set exactly one of weight or repeat")
        return out
