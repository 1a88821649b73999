"""Hugging Face folder -> Megatron checkpoint ready for cpt, verified by logits before it is written.

One model is held at a time: a TP=1 GPTModel is filled tensor by tensor from the safetensors shards
(one shard open at a time), its logits taken and its checkpoint staged; then it is freed and the HF
model loads for the reference logits. The staged checkpoint only appears if they match.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from factory.convert import hf_config, tokenizer_files
from factory.convert.config import ProbeConfig
from factory.convert.hf_io import LazyReader
from factory.convert.mapping import Shapes, entries, model_tensors
from factory.convert.verify import compare, hf_logits, megatron_logits, probe_tokens
from factory.errors import CheckpointError, ConfigError
from factory.io import atomic_dir
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig, RuntimeConfig

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some older exports carry; recomputed from theta


@dataclass
class ImportResult:
    architecture: str
    model: ModelConfig
    max_abs_logit_diff: float
    checkpoint: Path
    seconds: float


def read_hf_config(hf_dir: Path) -> dict:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"hf_import.hf_dir={hf_dir}: no config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def fill_model(model, reader: LazyReader, arch: str, m: ModelConfig) -> None:
    """Copy the HF tensors into the model's parameters through the table; every tensor must be used."""
    targets, shapes, used = model_tensors(model), Shapes.of(m), set()
    for entry in entries(arch, m):
        value = entry.transform.to_megatron([reader.get(k) for k in entry.hf], shapes)
        target = targets.pop(entry.megatron, None)
        if target is None:
            raise CheckpointError(f"model has no tensor {entry.megatron} ({arch} table); cannot import")
        if value.shape != target.shape:
            raise CheckpointError(f"{reader.folder}: {', '.join(entry.hf)} give shape {tuple(value.shape)} but "
                                  f"config.json implies {tuple(target.shape)} for {entry.megatron}")
        with torch.no_grad():
            target.copy_(value)
        used.update(entry.hf)
    tied_head = {"lm_head.weight"} if not m.untie_embeddings_and_output_weights else set()
    unused = sorted(k for k in set(reader.keys()) - used - tied_head if not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise CheckpointError(f"{reader.folder}: {len(unused)} tensor(s) have no {arch} mapping "
                              f"(biases or extra modules?), e.g. {', '.join(unused[:3])}")
    if targets:
        raise CheckpointError(f"model tensors left unset by the {arch} table: {', '.join(sorted(targets)[:3])}")


def import_hf(hf_dir: Path, out_root: Path, *, runtime: RuntimeConfig, tokenizer_out: Path,
              seq_length: int | None = None, make_vocab_size_divisible_by: int = 128,
              token_dispatcher: str = "allgather", probe: ProbeConfig | None = None) -> ImportResult:
    """Write a Megatron checkpoint at `out_root` (iteration 0) and the tokenizer at `tokenizer_out`."""
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import init_runtime, shutdown_runtime
    from factory.train.checkpoint import save

    probe, t0 = probe or ProbeConfig(), time.perf_counter()
    arch, m = hf_config.model_config(read_hf_config(hf_dir), seq_length=seq_length,
                                     make_vocab_size_divisible_by=make_vocab_size_divisible_by,
                                     token_dispatcher=token_dispatcher)
    tok = tokenizer_files.read(hf_dir)
    tokenizer_files.check_vocab(m.vocab_size, tok.size, f"{hf_dir}/config.json")
    reader = LazyReader(hf_dir)
    tokens = probe_tokens(probe, tok.size, m.max_position_embeddings or m.seq_length)
    try:
        rt = init_runtime(runtime.model_copy(update={"precision": "fp32"}), ParallelConfig())
        model = build_gpt_model(m, rt)
        fill_model(model, reader, arch, m)
        logits = megatron_logits(model, tokens, m.vocab_size)
        with atomic_dir(out_root) as tmp:
            save(tmp, 0, model, m, rt, meta={"source": "hf", "hf_dir": str(hf_dir),
                                             "hf_architecture": hf_config.ARCHITECTURES[arch]})
            del model  # one model at a time: the HF reference loads next
            diff = compare(hf_logits(hf_dir, tokens), logits, probe.tolerance, f"import {hf_dir} ({arch})")
        with atomic_dir(tokenizer_out) as tmp:
            tokenizer_files.copy(hf_dir, tmp)
    finally:
        shutdown_runtime()
    return ImportResult(arch, m, diff, Path(out_root), time.perf_counter() - t0)
