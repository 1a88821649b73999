"""Megatron checkpoint (any TP/PP/EP) -> Hugging Face folder, verified by logits before it appears.

One model is held at a time: the checkpoint is loaded into a TP=1 GPTModel, its reference logits taken,
its tensors mapped and written shard by shard, then it is freed before transformers loads the folder.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from factory.convert import card, hf_config, tokenizer_files
from factory.convert.config import ProbeConfig
from factory.convert.hf_io import ShardWriter
from factory.convert.mapping import Shapes, entries, model_tensors
from factory.convert.verify import compare, hf_logits, megatron_logits, probe_tokens
from factory.errors import CheckpointError
from factory.io import atomic_dir, atomic_write_text
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig, RuntimeConfig

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


def hf_tensors(tensors: dict[str, torch.Tensor], arch: str, m: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Megatron tensors (canonical keys) -> (HF name, tensor), consuming `tensors` entry by entry."""
    shapes = Shapes.of(m)
    for entry in entries(arch, m):
        if entry.megatron not in tensors:
            raise CheckpointError(f"checkpoint: tensor {entry.megatron} missing for {arch}")
        yield from zip(entry.hf, entry.transform.to_hf(tensors.pop(entry.megatron), shapes))
    if tensors:
        raise CheckpointError(f"checkpoint: {len(tensors)} tensor(s) have no {arch} mapping, e.g. {next(iter(tensors))}")


def _load_megatron(info, runtime: RuntimeConfig):
    """A TP=1 fp32 GPTModel holding the checkpoint, whatever layout it was saved in."""
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import init_runtime
    from factory.train.checkpoint import load

    rt = init_runtime(runtime.model_copy(update={"precision": "fp32"}), ParallelConfig())
    model = build_gpt_model(info.model, rt)
    load(info.path, model, rt, restore_rng=False)
    return model


def export_checkpoint(checkpoint: Path, out_dir: Path, *, runtime: RuntimeConfig, tokenizer_dir: Path | None,
                      architecture: str = "auto", dtype: str = "float32", max_shard_bytes: int = 5 * 10**9,
                      probe: ProbeConfig | None = None, run_dir: Path | None = None,
                      name: str = "model") -> ExportResult:
    """Write `out_dir` (atomically) or raise; the folder only appears once its logits match."""
    from factory.runtime.runtime import shutdown_runtime
    from factory.train.checkpoint import read_info

    probe = probe or ProbeConfig()
    t0 = time.perf_counter()
    info = read_info(checkpoint)
    m = info.model
    arch = hf_config.choose_architecture(m, architecture)
    tok = tokenizer_files.read(tokenizer_dir) if tokenizer_dir else None
    if tok:
        tokenizer_files.check_vocab(m.vocab_size, tok.size, f"checkpoint {info.path}")
    lineage = {**info.factory, "iteration": info.iteration, "checkpoint": str(info.path)}
    try:
        model = _load_megatron(info, runtime)
        if dtype != "float32":  # verify the function actually written: weights rounded to the export dtype
            for p in model.parameters():
                p.data = p.data.to(DTYPES[dtype]).float()
        tokens = probe_tokens(probe, tok.size if tok else m.vocab_size, m.max_position_embeddings or m.seq_length)
        reference = megatron_logits(model, tokens, m.vocab_size)
        with atomic_dir(out_dir) as tmp:
            writer = ShardWriter(tmp, max_shard_bytes)
            tensors = model_tensors(model)
            del model
            for hf_name, tensor in hf_tensors(tensors, arch, m):
                writer.add(hf_name, tensor.to(DTYPES[dtype]))
            del tensors
            gc.collect()
            shards = writer.finish()
            config = hf_config.hf_config(m, arch, tok.special_ids if tok else dict.fromkeys(NO_IDS))
            config.dtype = dtype
            config.save_pretrained(tmp)
            _generation_config(tok).save_pretrained(tmp)
            if tokenizer_dir:
                tokenizer_files.copy(tokenizer_dir, tmp)
            diff = compare(reference, hf_logits(tmp, tokens), probe.tolerance, f"export {checkpoint} -> {arch}")
            verification = {"max_abs_logit_diff": f"{diff:.3g} (fp32, tolerance {probe.tolerance:g})",
                            "probe": f"{tokens.shape[0]} x {tokens.shape[1]} random token ids, seed {probe.seed}",
                            "dtype": dtype}
            stages = card.manifests(run_dir) if run_dir else []
            atomic_write_text(tmp / "README.md", card.render(name, hf_config.ARCHITECTURES[arch],
                                                              m.model_dump(mode="json"), lineage, stages, verification))
    finally:
        shutdown_runtime()
    return ExportResult(arch, diff, shards, writer.total_bytes, time.perf_counter() - t0)


def _generation_config(tok):
    from transformers import GenerationConfig

    ids = tok.special_ids if tok else {}
    return GenerationConfig(**{k: v for k, v in ids.items() if v is not None})
