"""Declarative parameter tables, Megatron key -> HF key(s) + an invertible transform (one table per
architecture class in factory/convert/architectures).

The same table drives export (Megatron -> HF) and import (HF -> Megatron): each transform implements
both directions, so no inverse is written by hand. Keys are Megatron's GPTModel parameter names at TP=1
with the local layer spec (conversion always builds that spec: it runs on the CPU); the checkpoint reader
finds each under the key it is stored with, which CPU-local and Transformer Engine models share, so a
checkpoint trained with TE layers maps through the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from factory.model.config import ModelConfig


@dataclass(frozen=True)
class Shapes:
    """What the transforms need to know about the model."""

    heads: int
    groups: int
    head_dim: int
    vocab_size: int
    padded_vocab_size: int

    @classmethod
    def of(cls, m: ModelConfig) -> "Shapes":
        return cls(m.num_attention_heads, m.query_groups, m.head_dim, m.vocab_size, m.padded_vocab_size(1))


class Identity:
    """The same tensor on both sides."""

    def to_hf(self, t: torch.Tensor, s: Shapes) -> list[torch.Tensor]:
        return [t]

    def to_megatron(self, ts: list[torch.Tensor], s: Shapes) -> torch.Tensor:
        return ts[0]


class QKV:
    """Megatron's fused rows, per query group [q heads of the group, k, v] <-> separate q, k, v."""

    def to_hf(self, t: torch.Tensor, s: Shapes) -> list[torch.Tensor]:
        per_group = s.heads // s.groups
        grouped = t.reshape(s.groups, (per_group + 2) * s.head_dim, -1)
        q, k, v = grouped.split([per_group * s.head_dim, s.head_dim, s.head_dim], dim=1)
        return [x.reshape(-1, t.shape[-1]) for x in (q, k, v)]

    def to_megatron(self, ts: list[torch.Tensor], s: Shapes) -> torch.Tensor:
        q, k, v = ts
        hidden = q.shape[-1]
        q = q.reshape(s.groups, -1, hidden)
        k, v = (x.reshape(s.groups, s.head_dim, hidden) for x in (k, v))
        return torch.cat([q, k, v], dim=1).reshape(-1, hidden)


class GateUp:
    """SwiGLU linear_fc1 = cat(gate, up) along the output rows."""

    def to_hf(self, t: torch.Tensor, s: Shapes) -> list[torch.Tensor]:
        return list(t.chunk(2, dim=0))

    def to_megatron(self, ts: list[torch.Tensor], s: Shapes) -> torch.Tensor:
        return torch.cat(ts, dim=0)


class Vocab:
    """Embedding/output rows: padded rows stripped on export, zero rows appended on import."""

    def to_hf(self, t: torch.Tensor, s: Shapes) -> list[torch.Tensor]:
        return [t[: s.vocab_size]]

    def to_megatron(self, ts: list[torch.Tensor], s: Shapes) -> torch.Tensor:
        (t,) = ts
        pad = t.new_zeros(s.padded_vocab_size - t.shape[0], *t.shape[1:])
        return torch.cat([t, pad], dim=0)


IDENTITY, QKV_FUSED, GATE_UP, VOCAB = Identity(), QKV(), GateUp(), Vocab()


@dataclass(frozen=True)
class Rule:
    """`{i}` stands for the layer, `{e}` for the expert; both are expanded from the model config."""

    megatron: str
    hf: tuple[str, ...]
    transform: object = IDENTITY


@dataclass(frozen=True)
class Entry:
    """One expanded rule: concrete keys on both sides."""

    megatron: str
    hf: tuple[str, ...]
    transform: object


EMBED = [Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), VOCAB),
         Rule("decoder.final_layernorm.weight", ("model.norm.weight",))]
OUTPUT = Rule("output_layer.weight", ("lm_head.weight",), VOCAB)
"""The rules every architecture shares; the layers' rules come from its class (factory/convert/architectures)."""


def entries(layer_rules: list[Rule], m: ModelConfig) -> Iterator[Entry]:
    """The shared rules and an architecture's `layer_rules`, expanded over the layers and experts of `m`,
    in checkpoint order."""
    experts = m.moe.num_experts if m.moe else 0
    rules = EMBED + layer_rules + ([OUTPUT] if m.untie_embeddings_and_output_weights else [])
    for rule in rules:
        layers = range(m.num_layers) if "{i}" in rule.megatron else [None]
        for i in layers:
            for e in (range(experts) if "{e}" in rule.megatron else [None]):
                yield Entry(rule.megatron.format(i=i, e=e), tuple(h.format(i=i, e=e) for h in rule.hf),
                            rule.transform)
