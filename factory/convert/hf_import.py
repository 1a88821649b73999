"""Hugging Face folder -> Megatron checkpoint ready for cpt, verified by logits before it is written.

Streaming: each Megatron parameter is made from its HF tensors (one shard open at a time) while torch
DCP writes it, one parameter in memory at a time. Then the HF folder and the staged checkpoint run
layer by layer on the probe batch; the checkpoint only appears if their logits match.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from factory.convert import hf_config
from factory.convert.architectures import HfArchitecture
from factory.convert.config import ProbeConfig
from factory.convert.hf_io import LazyReader
from factory.convert.mapping import Shapes, entries
from factory.convert.verify import compare, hf_logits, megatron_logits, probe_tokens
from factory.errors import CheckpointError, ConfigError
from factory.hf import tokenizer_files
from factory.io import atomic_dir
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.runtime.runtime import runtime_session
from factory.strict_json import read_json_object
from factory.train.checkpoint_meta import CheckpointMeta, HfOrigin
from factory.train.checkpoint_stream import CheckpointReader, Layout, save_streaming

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
    return read_json_object(path, CheckpointError)


def check_tensors(reader: LazyReader, arch: HfArchitecture, m: ModelConfig, layout: Layout) -> dict[str, object]:
    """megatron name -> table entry; every HF tensor must be used and every model parameter set."""
    by_name = {entry.megatron: entry for entry in entries(arch.rules(), m)}
    unknown = [name for name in by_name if name not in layout.params]
    if unknown:
        raise CheckpointError(f"model has no tensor {unknown[0]} ({arch.name} table); cannot import")
    unset = sorted(set(layout.params) - set(by_name))
    if unset:
        raise CheckpointError(f"model tensors left unset by the {arch.name} table: {', '.join(unset[:3])}")
    used = {k for entry in by_name.values() for k in entry.hf}
    tied_head = {"lm_head.weight"} if not m.untie_embeddings_and_output_weights else set()
    unused = sorted(k for k in set(reader.keys()) - used - tied_head if not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise CheckpointError(f"{reader.folder}: {len(unused)} tensor(s) have no {arch.name} mapping "
                              f"(biases or extra modules?), e.g. {', '.join(unused[:3])}")
    missing = sorted(k for k in used if k not in reader.weight_map)
    if missing:
        raise CheckpointError(f"{reader.folder}: tensor {missing[0]} is missing ({len(missing)} in all)")
    return by_name


def import_hf(hf_dir: Path, out_root: Path, *, runtime_cfg: RuntimeConfig, tokenizer_out: Path,
              seq_length: int | None = None, make_vocab_size_divisible_by: int = 128,
              token_dispatcher: str = "allgather", probe: ProbeConfig | None = None) -> ImportResult:
    """Write a Megatron checkpoint at `out_root` (iteration 0) and the tokenizer at `tokenizer_out`."""
    probe, t0 = probe or ProbeConfig(), time.perf_counter()
    arch, m = hf_config.model_config(read_hf_config(hf_dir), source=f"{hf_dir}/config.json", seq_length=seq_length,
                                     make_vocab_size_divisible_by=make_vocab_size_divisible_by,
                                     token_dispatcher=token_dispatcher)
    tok = tokenizer_files.read(hf_dir)
    tokenizer_files.check_vocab(m.vocab_size, tok.size, f"{hf_dir}/config.json")
    reader = LazyReader(hf_dir)
    tokens = probe_tokens(probe, tok.size, m.max_position_embeddings or m.seq_length)
    shapes = Shapes.of(m)
    runtime_cfg = runtime_cfg.model_copy(update={"precision": "fp32", "device": "cpu"})  # bandwidth-bound
    with runtime_session(runtime_cfg, ParallelConfig()) as runtime:
        layout = Layout(m, runtime)
        by_name = check_tensors(reader, arch, m, layout)

        def produce(name: str) -> torch.Tensor:  # one Megatron parameter from its HF tensors
            entry = by_name[name]
            value = entry.transform.to_megatron([reader.get(k) for k in entry.hf], shapes)
            if tuple(value.shape) != layout.params[name][0]:
                verb = "give" if len(entry.hf) > 1 else "gives"
                raise CheckpointError(f"{reader.folder}: {', '.join(entry.hf)} {verb} shape {tuple(value.shape)} "
                                      f"but config.json implies {layout.params[name][0]} for {name}")
            return value

        with atomic_dir(out_root) as tmp:
            meta = CheckpointMeta(stage="import", imported_from=HfOrigin(str(hf_dir), arch.hf_class))
            save_streaming(tmp, m, runtime, produce, meta=meta)
            logits = megatron_logits(CheckpointReader(tmp, runtime), tokens, runtime)
            diff = compare(hf_logits(hf_dir, tokens), logits, probe.tolerance, f"import {hf_dir} ({arch.name})")
    with atomic_dir(tokenizer_out) as tmp:
        tokenizer_files.copy(hf_dir, tmp)
    return ImportResult(arch.name, m, diff, Path(out_root), time.perf_counter() - t0)
