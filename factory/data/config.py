"""Config section of the `data` stage: inputs, quality filters, language-mixing detector, dedup."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from factory import sbatch
from factory.schema import OPERATIONAL, Section, rule

Format = Literal["auto", "jsonl", "parquet", "text", "hf"]
_SBATCH_KEY = re.compile(r"[a-z][a-z-]*")


class DataInput(Section):
    """One corpus to ingest. A bare path in YAML (or `data.inputs=[a.jsonl,b.txt]`) is accepted too."""

    path: Path
    """JSONL, parquet, plain text file, or a local HF `datasets` folder written by `save_to_disk`."""
    format: Format = "auto"
    """auto: from the suffix (.jsonl/.json, .parquet, .txt) or, for a folder, an HF dataset."""
    text_field: str | None = None
    """Field holding the text (JSONL, parquet, HF); defaults to `data.text_field`."""
    japanese: bool = True
    """Apply the Japanese-only filters (Japanese share, language mixing); false for e.g. English corpora."""

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, (str, Path)) else value


class FilterConfig(Section):
    """Quality filters, applied in this order; the first that rejects names the reason."""

    min_chars: int = Field(default=20, ge=0)
    """Documents shorter than this (after stripping) are rejected as `length`."""
    max_chars: int = Field(default=200_000, ge=1)
    """Documents longer than this are rejected as `length`."""
    min_japanese_share: float = Field(default=0.3, ge=0, le=1)
    """Minimum share of Japanese characters (kana, kanji) among letters; 0 disables."""
    max_duplicate_line_share: float = Field(default=0.3, ge=0, le=1)
    """Maximum share of non-empty lines that repeat an earlier line (Gopher-style)."""
    ngram_size: int = Field(default=10, ge=2)
    """Character n-gram size of the repetition check."""
    max_repeated_ngram_share: float = Field(default=0.3, ge=0, le=1)
    """Maximum share of character n-grams that repeat an earlier one; 1 disables."""
    langmix: bool = True
    """Run the language-mixing detector on Japanese inputs (thresholds under `data.langmix`)."""


class LangMixConfig(Section):
    """Thresholds of the language-mixing detector (see docs/stages/data.md)."""

    min_foreign_run: int = Field(default=1, ge=1)
    """Letters in a run of Cyrillic, Hangul, Arabic, Thai or another script Japanese never uses that flag it
    (Greek flags from three letters: one or two are math symbols)."""
    min_diacritic_score: int = Field(default=2, ge=1)
    """Score of a Latin span that flags it: 2 per Turkish/Polish/Czech-only letter, 1 per other diacritic."""
    min_prose_words: int = Field(default=3, ge=2)
    """Plain lowercase Latin words in one span (outside code, URLs, glosses) that flag it as prose."""
    min_stray_words: int = Field(default=6, ge=1)
    """Distinct isolated plain lower-case Latin words (not programming vocabulary) that flag a document."""
    min_hanzi_only: int = Field(default=1, ge=1)
    """Han characters that Japanese does not use (simplified-Chinese-only, or outside every Japanese character
    set) that flag a document."""
    min_glued_letters: int = Field(default=4, ge=2)
    """Letters of a plain lower-case Latin word glued between Japanese characters (no spaces) that flag it,
    unless it is programming vocabulary or a command (shorter ones: ftp, gcc, tty are written that way)."""


class DedupConfig(Section):
    """Exact dedup on a normalized hash, then near dedup with MinHash LSH (datatrove's four MinHash steps)."""

    exact: bool = True
    """Drop documents whose NFKC-normalized, case-folded, whitespace-collapsed text was seen before."""
    near: bool = True
    """Drop documents whose estimated Jaccard similarity to a kept one reaches `threshold`."""
    threshold: float = Field(default=0.8, gt=0, lt=1)
    """Jaccard similarity of character shingles at which two documents are near duplicates."""
    num_perm: int = Field(default=128, ge=16)
    """MinHash permutations; split into the LSH bands that best separate pairs above and below `threshold`
    (9 bands of 13 for 0.8 and 128)."""
    shingle_size: int = Field(default=5, ge=1)
    """Character shingle length (Japanese has no spaces, so shingles are characters)."""
    seed: int = 1
    """MinHash seed; fixed so runs are reproducible."""


class DataSlurmConfig(Section):
    """Where `data.executor: slurm` runs each step's job array (datatrove's Slurm executor)."""

    partition: str = "cpu"
    """Slurm partition of the data jobs."""
    time: str = "24:00:00"
    """Time limit of each array task (a task is one input; the dedup steps hold one bucket or all clusters)."""
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: int = Field(default=4, ge=0)
    """Memory request per CPU; 0 leaves it to the partition's default."""
    env_command: str = ""
    """Shell line run before each task (e.g. `source .venv/bin/activate`); empty: the submitting environment."""
    sbatch_args: dict[str, str] = Field(default_factory=dict)
    """Extra `#SBATCH --KEY=VALUE` lines (account, qos, constraint, ...)."""
    poll_seconds: float = Field(default=30, gt=0)
    """How often the stage checks the submitted jobs before it publishes the result."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, sbatch.name_problem(self.partition) is None, f"{prefix}.partition", repr(self.partition),
             sbatch.name_problem(self.partition) or "")
        for key, value in self.sbatch_args.items():
            rule(out, _SBATCH_KEY.fullmatch(key) is not None and sbatch.line_problem(value) is None,
                 f"{prefix}.sbatch_args.{key}", repr(value), "expected an sbatch option name (letters and '-') "
                 "and a value without line breaks")
        return out


class DataConfig(Section):
    """Ingest corpora, filter them and dedup them into `kept.jsonl` + `rejected.jsonl`."""

    inputs: list[DataInput] = Field(min_length=1)
    """Corpora to read, in order (dedup keeps the first occurrence)."""
    text_field: str = "text"
    """Default field holding the text in JSONL, parquet and HF inputs."""
    text_unit: Literal["paragraph", "line"] = "paragraph"
    """How plain text files split into documents: blank-line separated paragraphs, or lines."""
    output_dir: Path | None = None
    """Defaults to `<run.dir>/data`."""
    num_workers: Annotated[int, OPERATIONAL] = Field(default=2, ge=1)
    """Local executor: tasks run at once (a task is one input, or one MinHash bucket)."""
    executor: Annotated[Literal["local", "slurm"], OPERATIONAL] = "local"
    """local: datatrove's local executor; slurm: one dependent job array per step (`data.slurm`)."""
    slurm: Annotated[DataSlurmConfig, OPERATIONAL] = Field(default_factory=DataSlurmConfig)
    allow_empty: bool = False
    """Accept a result with no records in or none kept (otherwise an error)."""
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """Fail when more than this share of an input's records is malformed."""
    report_errors: Annotated[int, OPERATIONAL] = Field(default=5, ge=0)
    """Malformed records reported with file:line (all are counted and kept in rejected.jsonl)."""
    filters: FilterConfig = Field(default_factory=FilterConfig)
    langmix: LangMixConfig = Field(default_factory=LangMixConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        f = self.filters
        rule(out, f.min_chars < f.max_chars, f"{prefix}.filters.min_chars", f.min_chars,
             f"must be below filters.max_chars ({f.max_chars})")
        return out + (self.slurm.problems(f"{prefix}.slurm") if self.executor == "slurm" else [])
