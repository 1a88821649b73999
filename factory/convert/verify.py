"""Logit verification: the same seeded probe batch through both models, max |difference| vs tolerance."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from factory.convert.config import ProbeConfig
from factory.errors import VerificationError

log = logging.getLogger(__name__)


def probe_tokens(probe: ProbeConfig, vocab_size: int, max_positions: int) -> torch.Tensor:
    """[batch, length] random ids below `vocab_size` (the tokenizer's ids, never padding rows)."""
    gen = torch.Generator().manual_seed(probe.seed)
    return torch.randint(0, vocab_size, (probe.batch, min(probe.length, max_positions)), generator=gen)


@torch.no_grad()
def megatron_logits(model, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """fp32 CPU logits of a TP=1 GPTModel, padded vocab rows dropped."""
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    positions = torch.arange(tokens.shape[1], device=device).expand_as(tokens)
    logits = model.eval()(tokens, positions, None)
    return logits[..., :vocab_size].float().cpu()


@torch.no_grad()
def hf_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    """fp32 logits of the folder loaded with stock transformers (no remote code, offline)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True,
                                                 trust_remote_code=False)
    logits = model.eval()(input_ids=tokens).logits.float()
    del model
    return logits


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
