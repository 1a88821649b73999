"""Megatron checkpoint (any TP/PP/EP) -> Hugging Face folder, verified by logits before it appears.

Streaming: each checkpoint parameter is read (whatever TP/PP/EP it was saved with), mapped and appended
to its safetensors shard, one at a time; the shard layout is planned from shapes first. Verification
runs the checkpoint and the written folder layer by layer, so no whole model is ever in memory.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from factory.convert import architectures, card, hf_config
from factory.convert.architectures import HfArchitecture
from factory.convert.config import ProbeConfig
from factory.convert.gguf import GGUF_NAME, export_gguf
from factory.convert.hf_io import StreamingShardWriter
from factory.convert.mapping import Shapes, entries
from factory.convert.verify import compare, hf_logits, megatron_logits, probe_tokens
from factory.errors import CheckpointError
from factory.hf import tokenizer_files
from factory.identity import is_megatron_checkpoint
from factory.io import atomic_dir, atomic_write_text
from factory.model.config import ModelConfig
from factory.progress import ByteProgress
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.runtime.runtime import runtime_session
from factory.train.checkpoint import read_info
from factory.train.checkpoint_stream import CheckpointReader

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
NO_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # no tokenizer: no guessed ids


@dataclass
class ExportResult:
    architecture: str
    max_abs_logit_diff: float
    shards: list[str]
    total_bytes: int
    seconds: float
    gguf: dict | None = None
    """llama.cpp's figures when a GGUF was written (factory.convert.gguf.Comparison.summary)."""


@dataclass
class GgufCheck:
    """Write a GGUF beside the HF files and check it on these held-out lines (factory.convert.gguf)."""

    lines: list[str]
    allow_mismatch: bool = False


def hf_plan(reader: CheckpointReader, arch: HfArchitecture, m: ModelConfig,
            dtype: torch.dtype) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(HF name, shape, dtype) of every tensor the folder will hold, in write order, from shapes alone;
    every checkpoint parameter must be mapped by the table."""
    shapes, plan, mapped = Shapes.of(m), [], set()
    for entry in entries(arch.rules(), m):
        if entry.megatron not in reader.layout.params:
            raise CheckpointError(f"checkpoint: tensor {entry.megatron} missing for {arch.name}")
        meta = torch.empty(reader.layout.params[entry.megatron][0], device="meta")
        plan += [(name, tuple(t.shape), dtype) for name, t in zip(entry.hf, entry.transform.to_hf(meta, shapes))]
        mapped.add(entry.megatron)
    unmapped = [name for name in reader.names if name not in mapped]
    if unmapped:
        raise CheckpointError(f"checkpoint: {len(unmapped)} tensor(s) have no {arch.name} mapping, e.g. {unmapped[0]}")
    return plan


def export_checkpoint(checkpoint: Path, out_dir: Path, *, runtime_cfg: RuntimeConfig, tokenizer_dir: Path | None,
                      architecture: str = "auto", dtype: str = "float32", max_shard_bytes: int = 5 * 10**9,
                      probe: ProbeConfig | None = None, run_dir: Path | None = None,
                      name: str = "model", gguf: GgufCheck | None = None) -> ExportResult:
    """Write `out_dir` (atomically) or raise; the folder only appears once its logits match."""
    probe = probe or ProbeConfig()
    t0 = time.perf_counter()
    info = read_info(checkpoint)
    m = info.model
    arch = architectures.get(hf_config.choose_architecture(m, architecture))
    tok = tokenizer_files.read(tokenizer_dir) if tokenizer_dir else None
    if tok:
        tokenizer_files.check_vocab(m.vocab_size, tok.size, f"checkpoint {info.path}")
    lineage = {**info.meta.to_dict(), "iteration": info.iteration, "checkpoint": str(info.path)}
    tokens = probe_tokens(probe, tok.size if tok else m.vocab_size, m.max_position_embeddings or m.seq_length)
    # bandwidth-bound; local-spec names
    runtime_cfg = runtime_cfg.model_copy(update={"precision": "fp32", "device": "cpu"})
    with runtime_session(runtime_cfg, ParallelConfig()) as runtime, atomic_dir(out_dir) as tmp:
        reader = CheckpointReader(info.path, runtime)
        writer = StreamingShardWriter(tmp, hf_plan(reader, arch, m, DTYPES[dtype]), max_shard_bytes)
        progress = ByteProgress("export", writer.total_bytes)
        shapes = Shapes.of(m)
        try:
            for entry in entries(arch.rules(), m):  # one checkpoint parameter in memory at a time
                tensor = reader.read([entry.megatron])[entry.megatron]
                for hf_name, out in zip(entry.hf, entry.transform.to_hf(tensor, shapes)):
                    writer.add(hf_name, out.to(DTYPES[dtype]))
                    progress.advance(out.numel() * DTYPES[dtype].itemsize)
        finally:
            progress.close()
        shards = writer.finish()
        config = hf_config.hf_config(m, arch, tok.special_ids if tok else dict.fromkeys(NO_IDS))
        config.dtype = dtype
        config.save_pretrained(tmp)
        hf_config.write_legacy_fields(tmp)
        _generation_config(tok).save_pretrained(tmp)
        if tokenizer_dir:
            tokenizer_files.copy(tokenizer_dir, tmp)
        reference = megatron_logits(reader, tokens, runtime, DTYPES[dtype])
        diff = compare(reference, hf_logits(tmp, tokens), probe.tolerance, f"export {checkpoint} -> {arch.name}")
        verification = {"max_abs_logit_diff": f"{diff:.3g} (fp32, tolerance {probe.tolerance:g})",
                        "probe": f"{tokens.shape[0]} x {tokens.shape[1]} random token ids, seed {probe.seed}",
                        "dtype": dtype}
        gguf_figures = None
        if gguf is not None:
            verification[GGUF_NAME], comparison = export_gguf(tmp, gguf.lines, tok.model_type if tok else None,
                                                              probe.tolerance, gguf.allow_mismatch)
            gguf_figures = comparison.summary()
        stages = card.manifests(run_dir) if run_dir else []
        atomic_write_text(tmp / "README.md", card.render(name, arch.hf_class, m.model_dump(mode="json"), lineage,
                                                          stages, verification, tok.model_type if tok else None))
    return ExportResult(arch.name, diff, shards, writer.total_bytes, time.perf_counter() - t0, gguf_figures)


def _generation_config(tok):
    """A base model's generation ends where pretraining ended documents (<EOD>) as well as at EOS."""
    from transformers import GenerationConfig

    ids = dict(tok.special_ids) if tok else {}
    if tok:
        ids["eos_token_id"] = tokenizer_files.end_ids(ids.get("eos_token_id"), tok.document_end_id)
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None})


@contextlib.contextmanager
def as_hf_folder(model: Path, *, runtime_cfg: RuntimeConfig, tokenizer_dir: Path | None, run_dir: Path | None = None,
                 name: str = "model") -> Iterator[Path]:
    """`model` as an HF folder: itself, or a temporary export of a Megatron checkpoint (verified by logits)."""
    if not is_megatron_checkpoint(model):
        yield model
        return
    with tempfile.TemporaryDirectory(prefix="factory-export-") as tmp:
        export_checkpoint(model, Path(tmp) / "hf", runtime_cfg=runtime_cfg, tokenizer_dir=tokenizer_dir,
                          run_dir=run_dir, name=name)
        yield Path(tmp) / "hf"
