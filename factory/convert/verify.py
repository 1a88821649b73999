"""Logit verification: the same seeded probe batch through both models, max |difference| vs tolerance.

Both sides run one decoder layer at a time (factory.model.layer_stream, factory.convert.hf_stream), so
verifying a conversion holds one layer of each model, never a whole model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from factory.convert.config import ProbeConfig
from factory.convert.hf_io import LazyReader
from factory.convert.hf_stream import HfLayerStream
from factory.errors import VerificationError
from factory.model.layer_stream import LayerStream

if TYPE_CHECKING:  # for annotations only
    from factory.runtime.runtime import Runtime
    from factory.train.checkpoint_stream import CheckpointReader

log = logging.getLogger(__name__)


def probe_tokens(probe: ProbeConfig, vocab_size: int, max_positions: int) -> torch.Tensor:
    """[batch, length] random ids below `vocab_size` (the tokenizer's ids, never padding rows)."""
    gen = torch.Generator().manual_seed(probe.seed)
    return torch.randint(0, vocab_size, (probe.batch, min(probe.length, max_positions)), generator=gen)


def megatron_logits(reader: CheckpointReader, tokens: torch.Tensor, runtime: Runtime,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """fp32 logits of a Megatron checkpoint run layer by layer (padded vocab rows dropped); with a
    lower `dtype`, each weight is first rounded to it (the function an export in that dtype computes)."""
    def fill(targets: dict[str, torch.Tensor]) -> None:
        reader.read_into(targets)
        if dtype != torch.float32:
            for t in targets.values():
                t.copy_(t.to(dtype))

    return LayerStream(reader.info.model, runtime).forward(tokens, fill)[0]


def hf_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    """fp32 logits of the folder under stock transformers modules (config.json, no remote code),
    run layer by layer with the folder's own tensors."""
    from transformers import AutoConfig

    stream = HfLayerStream(AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False))
    reader = LazyReader(folder)
    hidden = stream.embed(tokens, {k: reader.get(k) for k in stream.embed_names()})
    for i in range(stream.num_layers):
        hidden = stream.layer(hidden, i, {k: reader.get(k) for k in stream.layer_names(i)})
    return stream.logits(hidden, {k: reader.get(k) for k in stream.head_names()})


def compare(reference: torch.Tensor, candidate: torch.Tensor, tolerance: float, what: str) -> float:
    """max |difference|; raises VerificationError above `tolerance` (the caller has written nothing yet)."""
    if reference.shape != candidate.shape:
        raise VerificationError(f"{what}: logits shape {tuple(candidate.shape)} != {tuple(reference.shape)}; "
                                "nothing was written")
    diff = (reference - candidate).abs().max().item()
    log.info("%s: max |logit difference| %.3g (tolerance %.1g)", what, diff, tolerance)
    if not diff <= tolerance:
        raise VerificationError(f"{what}: max |logit difference| {diff:.3g} > tolerance {tolerance:g}; "
                                "nothing was written")
    return diff
