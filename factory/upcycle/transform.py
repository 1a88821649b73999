"""Pure tensor functions: one dense SwiGLU FFN -> router, routed experts and shared expert weights.

Megatron's dense `linear_fc1.weight` is cat([gate, up], dim 0) with shape [2F, h]; `linear_fc2.weight`
is [h, F]. Intermediate neuron i is gate row i, up row i and fc2 column i, so any partition of the
neurons into parts sums back to the dense FFN: FFN(x) = sum over parts of FFN_part(x).
"""

from __future__ import annotations

import re
import zlib
from typing import Callable

import torch

from factory.upcycle.target import ExpertPlan


def split_fc1(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate, up) halves of a fused SwiGLU linear_fc1 weight."""
    ffn = fc1.shape[0] // 2
    return fc1[:ffn], fc1[ffn:]


def generator(seed: int, layer: int, *tags: object) -> torch.Generator:
    """A generator for one (layer, tensor) draw: the same numbers whatever order tensors are made in."""
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, (seed, layer, *tags))).encode()))


def mlp_keys(plan: ExpertPlan) -> list[str]:
    """The MoE layer's tensors, keyed like Megatron's `mlp.` submodule (local spec)."""
    keys = ["router.weight"]
    if plan.shared_size:
        keys += ["shared_experts.linear_fc1.weight", "shared_experts.linear_fc2.weight"]
        keys += ["shared_experts.gate_weight"] if plan.shared_gate else []
    for e in range(plan.num_experts):
        keys += [f"experts.local_experts.{e}.linear_fc1.weight", f"experts.local_experts.{e}.linear_fc2.weight"]
    return keys


_EXPERT = re.compile(r"^(shared_experts|experts\.local_experts\.(\d+))\.linear_fc([12])\.weight$")


def mlp_tensor(key: str, dense: Callable[[str], torch.Tensor], plan: ExpertPlan, hidden: int,
               dtype: torch.dtype, seed: int, layer: int) -> torch.Tensor:
    """One tensor of layer `layer`'s MoE block (a key of `mlp_keys`), made from the dense FFN.

    `dense("linear_fc1.weight")` / `dense("linear_fc2.weight")` return the dense layer's FFN weights;
    each tensor asks only for the one it is cut from."""
    if key == "router.weight":
        return router_weight(plan, hidden, generator(seed, layer, "router"), dtype)
    if key == "shared_experts.gate_weight":
        return torch.zeros(1, hidden, dtype=dtype)  # sigmoid(0) = 1/2, undone by the doubled fc2
    match = _EXPERT.match(key)
    if match is None:
        raise KeyError(f"mlp.{key}: not a tensor of the upcycled MoE layer")
    fc = int(match[3])
    source = dense(f"linear_fc{fc}.weight")
    ffn = source.shape[1] if fc == 2 else source.shape[0] // 2
    if match[2] is None:  # the shared expert: the first shared_size neurons
        idx = slice(0, plan.shared_size)
        return neurons_fc1(source, idx) if fc == 1 else source[:, idx] * (2.0 if plan.shared_gate else 1.0)
    e = int(match[2])
    part = plan.routed_ffn(ffn)
    start = plan.shared_size + (e % plan.granularity) * part  # expert e = copy e // G, shard e % G
    idx = slice(start, start + part)
    out = neurons_fc1(source, idx) if fc == 1 else source[:, idx].clone()
    if plan.drop_fraction > 0:
        _drop_reinit(out, source, fc, plan.drop_fraction, seed, layer, e)
    if fc == 2:
        out.mul_(plan.alpha)
    if plan.noise_std > 0:
        noise = torch.randn(out.shape, generator=generator(seed, layer, e, f"noise{fc}"))
        out.add_(noise.mul_(plan.noise_std).to(out.dtype))
    return out


def neurons_fc1(fc1: torch.Tensor, idx: slice) -> torch.Tensor:
    """The fused fc1 rows (gate then up) of intermediate neurons `idx`, as a fresh tensor."""
    gate, up = split_fc1(fc1)
    return torch.cat([gate[idx], up[idx]])


def router_weight(plan: ExpertPlan, hidden: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """[E, h]: one row per FFN copy, repeated for its G experts so their logits tie exactly."""
    copies = plan.num_experts // plan.granularity
    if plan.router_zero:
        return torch.zeros(plan.num_experts, hidden, dtype=dtype)
    rows = torch.randn(copies, hidden, generator=gen, dtype=torch.float32) * plan.router_std
    return rows.repeat_interleave(plan.granularity, dim=0).to(dtype)


def dropped_neurons(part: int, fraction: float, seed: int, layer: int, expert: int) -> torch.Tensor:
    """Indices (within the expert) of the neurons Drop-Upcycling re-draws; fc1 and fc2 agree."""
    count = round(fraction * part)
    return torch.randperm(part, generator=generator(seed, layer, expert, "drop"))[:count]


def _drop_reinit(out: torch.Tensor, dense: torch.Tensor, fc: int, fraction: float, seed: int, layer: int,
                 expert: int) -> None:
    """Drop-Upcycling, in place: the dropped neurons of this expert matrix re-drawn from N(mean, std)
    of the same dense matrix (gate, up or fc2: the paper's statistical re-initialization)."""
    part = out.shape[1] if fc == 2 else out.shape[0] // 2
    idx = dropped_neurons(part, fraction, seed, layer, expert)
    if idx.numel() == 0:
        return
    gen = generator(seed, layer, expert, f"drop{fc}")
    if fc == 2:
        out[:, idx] = _normal_like(dense, (out.shape[0], idx.numel()), gen)
        return
    for half, source in zip(split_fc1(out), split_fc1(dense)):
        half[idx] = _normal_like(source, (idx.numel(), half.shape[1]), gen)


def _normal_like(source: torch.Tensor, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    values = source.float()  # one fp32 copy (none for fp32), not one per statistic
    mean, std = values.mean(), values.std()
    return (torch.randn(shape, generator=gen) * std + mean).to(source.dtype)
