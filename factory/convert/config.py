"""Config sections of the export and import stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from factory.schema import Section, rule


class ProbeConfig(Section):
    """The seeded batch both models see when their logits are compared."""

    batch: int = Field(default=2, ge=1)
    """Sequences in the probe batch."""
    length: int = Field(default=32, ge=1)
    """Tokens per probe sequence (capped at the model's max positions)."""
    seed: int = 0
    """Seed of the random token ids."""
    tolerance: float = Field(default=1e-4, gt=0)
    """Largest max |logit difference| accepted (fp32); above it nothing is written."""


class ExportConfig(Section):
    """Megatron checkpoint -> Hugging Face folder, verified by logits."""

    checkpoint: Path
    """Checkpoint root (with latest_checkpointed_iteration.txt) or one iter_NNNNNNN folder; any TP/PP/EP."""
    output_dir: Path | None = None
    """HF folder to write; defaults to `<run.dir>/export/hf`."""
    architecture: str = "auto"
    """HF architecture, one of factory/convert/architectures' registry (llama, mixtral, qwen3_moe, qwen2_moe); auto
    picks the one computing the same function (dense: llama, MoE: by router)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the written weights; bfloat16 is verified against the checkpoint rounded to bfloat16."""
    max_shard_gb: float = Field(default=5.0, gt=0)
    """Largest safetensors shard in GB (1e9 bytes)."""
    tokenizer_dir: Path | None = None
    """HF tokenizer files (with the chat template) to copy; defaults to `<run.dir>/tokenizer`."""
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    """Logit verification of the written folder against the checkpoint."""
    gguf: bool = False
    """Also write `model-f32.gguf` into the folder with llama.cpp's own converter (the pinned build of
    scripts/build_llama_cpp.sh), verified against transformers: ids on `gguf_text` and fixed strings, logits
    on a probe (within probe.tolerance), chat markers as control tokens; nothing is written on a mismatch."""
    gguf_allow_mismatch: bool = False
    """Write the GGUF even when llama.cpp's ids differ from transformers' (a Unigram tokenizer always does;
    the share of lines that differ is logged and put in the model card)."""
    gguf_text: list[Path] = Field(default_factory=list)
    """Held-out text (.txt, .jsonl, local datasets folders) whose lines the GGUF's ids are checked on;
    required with `gguf`."""
    gguf_max_lines: int = Field(default=300, ge=1)
    """Lines of `gguf_text` checked."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, not self.gguf or bool(self.gguf_text), f"{prefix}.gguf_text", self.gguf_text,
             "required with export.gguf=true: held-out text files whose lines llama.cpp's ids are checked on")
        return out


class VocabExtensionConfig(Section):
    """Japanese pieces added to the imported model's SentencePiece BPE tokenizer, with embedding and output
    rows initialised from the mean of the old pieces each new piece decomposes into (the Swallow route)."""

    tokenizer_dir: Path
    """Folder with the tokenizer.model whose Japanese pieces are added (e.g. the tokenizer stage's output)."""
    max_new_pieces: int = Field(default=16000, ge=1)
    """Most pieces to add (characters missing from the base vocabulary included)."""
    text: list[Path] = Field(min_length=1)
    """Held-out text (.txt, .jsonl, local datasets folders) for the id checks and the compression figures."""
    text_field: str = "text"
    """JSONL key / dataset column holding the text."""
    max_lines: int = Field(default=5000, ge=1)
    """Lines of `text` checked and measured."""


class ImportConfig(Section):
    """Hugging Face folder -> Megatron checkpoint ready for cpt, verified by logits."""

    hf_dir: Path
    """HF folder: config.json, safetensors (single or sharded with index), tokenizer files."""
    output_dir: Path | None = None
    """Checkpoint root to write; defaults to `<run.dir>/import/checkpoints`. The tokenizer goes beside it."""
    seq_length: int | None = Field(default=None, ge=1)
    """model.seq_length recorded in the checkpoint; defaults to the HF max_position_embeddings."""
    make_vocab_size_divisible_by: int = Field(default=128, ge=1)
    """The embedding is zero-padded to a multiple of this."""
    token_dispatcher: Literal["allgather", "alltoall"] = "allgather"
    """MoE token dispatcher recorded in the model config (alltoall needs CUDA)."""
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    """Logit verification of the imported model against the HF model."""
    extend_vocab: VocabExtensionConfig | None = None
    """Add Japanese pieces to the tokenizer and resize the checkpoint for them (docs/stages/convert.md)."""
