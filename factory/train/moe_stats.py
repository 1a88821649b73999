"""Per-layer, per-expert token counts of MoE routers, gathered by forward hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # for annotations only
    from megatron.core.transformer.moe.router import TopKRouter


class ExpertLoad:
    """Counts the tokens each router sends to each expert, per MoE layer, between `take()` calls."""

    def __init__(self, model: torch.nn.Module):
        from megatron.core.transformer.moe.router import TopKRouter

        self.routers = [(name, m) for name, m in model.named_modules() if isinstance(m, TopKRouter)]
        self.counts: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.routers]

    def _hook(self, name: str):
        def record(module: TopKRouter, inputs: tuple[torch.Tensor, ...],
                   output: tuple[torch.Tensor, torch.Tensor]) -> None:
            routing_map = output[1]  # [tokens, experts] bool
            counts = routing_map.detach().sum(dim=0).to(torch.float64)
            self.counts[name] = self.counts.get(name, 0) + counts
        return record

    def take(self) -> dict[str, list[float]]:
        """{layer: tokens per expert} since the last call, summed over data-parallel ranks."""
        from megatron.core import parallel_state

        out = {}
        for name, counts in sorted(self.counts.items()):
            if torch.distributed.is_initialized():
                torch.distributed.all_reduce(counts, group=parallel_state.get_data_parallel_group())
            out[_layer_name(name)] = counts.tolist()
        self.counts = {}
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def imbalance(counts: list[float]) -> float:
    """max / mean tokens per expert (1.0 = perfectly balanced)."""
    mean = sum(counts) / len(counts)
    return max(counts) / mean if mean > 0 else 0.0


def _layer_name(module_name: str) -> str:
    parts = module_name.split(".")
    return f"layer{parts[parts.index('layers') + 1]}" if "layers" in parts else module_name
