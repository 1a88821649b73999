"""Pure tensor functions: one dense SwiGLU FFN -> router, routed experts and shared expert weights.

Megatron's dense `linear_fc1.weight` is cat([gate, up], dim 0) with shape [2F, h]; `linear_fc2.weight`
is [h, F]. Intermediate neuron i is gate row i, up row i and fc2 column i, so any partition of the
neurons into parts sums back to the dense FFN: FFN(x) = sum over parts of FFN_part(x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ExpertPlan:
    """How one dense FFN becomes an MoE layer (the same for every layer)."""

    num_experts: int
    granularity: int
    alpha: float
    """Factor on each routed expert's linear_fc2 (see routing.py)."""
    shared_size: int = 0
    """Leading intermediate neurons that become the shared expert (0: none)."""
    shared_gate: bool = False
    """Zero gate weight (sigmoid = 1/2) and the shared linear_fc2 doubled: exact, powers of two."""
    router_zero: bool = False
    router_std: float = 0.02
    drop_fraction: float = 0.0
    noise_std: float = 0.0

    def routed_ffn(self, ffn: int) -> int:
        """Intermediate size of one routed expert for a dense FFN of `ffn` neurons."""
        return (ffn - self.shared_size) // self.granularity


def split_fc1(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate, up) halves of a fused SwiGLU linear_fc1 weight."""
    ffn = fc1.shape[0] // 2
    return fc1[:ffn], fc1[ffn:]


def neurons(fc1: torch.Tensor, fc2: torch.Tensor, idx: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """The sub-FFN made of intermediate neurons `idx`: (fused fc1, fc2), fresh tensors."""
    gate, up = split_fc1(fc1)
    return torch.cat([gate[idx], up[idx]]).clone(), fc2[:, idx].clone()


def router_weight(plan: ExpertPlan, hidden: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """[E, h]: one row per FFN copy, repeated for its G experts so their logits tie exactly."""
    copies = plan.num_experts // plan.granularity
    if plan.router_zero:
        return torch.zeros(plan.num_experts, hidden, dtype=dtype)
    rows = torch.randn(copies, hidden, generator=gen, dtype=torch.float32) * plan.router_std
    return rows.repeat_interleave(plan.granularity, dim=0).to(dtype)


def drop_reinit(fc1: torch.Tensor, fc2: torch.Tensor, stats: dict[str, tuple[float, float]],
                fraction: float, gen: torch.Generator) -> None:
    """Drop-Upcycling, in place: re-draw a random `fraction` of this expert's neurons from
    N(mean, std) of the dense gate, up and fc2 matrices (the paper's statistical re-initialization)."""
    ffn = fc2.shape[1]
    count = round(fraction * ffn)
    if count == 0:
        return
    idx = torch.randperm(ffn, generator=gen)[:count]
    gate, up = split_fc1(fc1)
    for name, target, rows in (("gate", gate, True), ("up", up, True), ("fc2", fc2, False)):
        mean, std = stats[name]
        shape = (count, target.shape[1]) if rows else (target.shape[0], count)
        fresh = torch.randn(shape, generator=gen, dtype=torch.float32).mul_(std).add_(mean).to(target.dtype)
        if rows:
            target[idx] = fresh
        else:
            target[:, idx] = fresh


def weight_stats(fc1: torch.Tensor, fc2: torch.Tensor) -> dict[str, tuple[float, float]]:
    gate, up = split_fc1(fc1)
    return {name: (t.float().mean().item(), t.float().std().item())
            for name, t in (("gate", gate), ("up", up), ("fc2", fc2))}


def upcycle_mlp(fc1: torch.Tensor, fc2: torch.Tensor, plan: ExpertPlan,
                gen: torch.Generator) -> dict[str, torch.Tensor]:
    """MoE-layer tensors keyed like Megatron's `mlp.` submodule (local spec) for one dense FFN."""
    ffn = fc2.shape[1]
    part = plan.routed_ffn(ffn)
    out: dict[str, torch.Tensor] = {"router.weight": router_weight(plan, fc2.shape[0], gen, fc1.dtype)}
    if plan.shared_size:
        s_fc1, s_fc2 = neurons(fc1, fc2, slice(0, plan.shared_size))
        if plan.shared_gate:
            out["shared_experts.gate_weight"] = torch.zeros(1, fc2.shape[0], dtype=fc1.dtype)
            s_fc2.mul_(2.0)
        out["shared_experts.linear_fc1.weight"] = s_fc1
        out["shared_experts.linear_fc2.weight"] = s_fc2
    stats = weight_stats(fc1, fc2) if plan.drop_fraction > 0 else {}
    for e in range(plan.num_experts):
        start = plan.shared_size + (e % plan.granularity) * part  # expert e = copy e // G, shard e % G
        e_fc1, e_fc2 = neurons(fc1, fc2, slice(start, start + part))
        if plan.drop_fraction > 0:
            drop_reinit(e_fc1, e_fc2, stats, plan.drop_fraction, gen)
        e_fc2.mul_(plan.alpha)
        if plan.noise_std > 0:
            e_fc1.add_(torch.randn(e_fc1.shape, generator=gen).mul_(plan.noise_std).to(e_fc1.dtype))
            e_fc2.add_(torch.randn(e_fc2.shape, generator=gen).mul_(plan.noise_std).to(e_fc2.dtype))
        out[f"experts.local_experts.{e}.linear_fc1.weight"] = e_fc1
        out[f"experts.local_experts.{e}.linear_fc2.weight"] = e_fc2
    return out
