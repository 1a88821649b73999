"""Move weights from a dense GPTModel into an MoE GPTModel, and compare their logits on a probe batch."""

from __future__ import annotations

import torch

from factory.upcycle.transform import ExpertPlan, upcycle_mlp

_DENSE_FFN = ("mlp.linear_fc1.weight", "mlp.linear_fc2.weight")


@torch.no_grad()
def fill_moe(dense, moe, plan: ExpertPlan, seed: int) -> None:
    """Copy every non-FFN tensor of `dense` into `moe` and build each layer's experts from its FFN."""
    gen = torch.Generator().manual_seed(seed)
    src = dense.state_dict()
    dst = {k: v for k, v in moe.state_dict().items() if isinstance(v, torch.Tensor)}
    done = set()
    for i in range(len(dense.decoder.layers)):
        prefix = f"decoder.layers.{i}."
        fc1, fc2 = (src[prefix + name] for name in _DENSE_FFN)
        for key, tensor in upcycle_mlp(fc1, fc2, plan, gen).items():
            _copy(dst, prefix + "mlp." + key, tensor)
            done.add(prefix + "mlp." + key)
    for key, tensor in src.items():
        if isinstance(tensor, torch.Tensor) and not key.endswith(_DENSE_FFN):
            _copy(dst, key, tensor)
            done.add(key)
    missing = sorted(set(dst) - done)
    if missing:
        raise KeyError(f"MoE tensors not filled from the dense model: {', '.join(missing[:5])}")


def _copy(dst: dict[str, torch.Tensor], key: str, tensor: torch.Tensor) -> None:
    if key not in dst:
        raise KeyError(f"{key}: no such tensor in the MoE model")
    if dst[key].shape != tensor.shape:
        raise KeyError(f"{key}: shape {tuple(tensor.shape)} does not fit the MoE model's {tuple(dst[key].shape)}")
    dst[key].copy_(tensor)


def probe_tokens(vocab_size: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=gen)


@torch.no_grad()
def logits(model, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Eval-mode logits [b, s, vocab] (padding dropped) of a TP=1, single-stage GPTModel."""
    model.eval()
    tokens = tokens.to(next(model.parameters()).device)
    pos = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    return model(tokens, pos, None)[..., :vocab_size].float().cpu()
