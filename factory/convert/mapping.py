"""One declarative table per architecture, Megatron key -> HF key(s) + an invertible transform.

The same table drives export (Megatron -> HF) and import (HF -> Megatron): each transform implements
both directions, so no inverse is written by hand. Keys are Megatron's GPTModel names at TP=1 with the
local layer spec (conversion always builds that spec: it runs on the CPU).
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


L, HL = "decoder.layers.{i}.", "model.layers.{i}."
_EMBED = [Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), VOCAB),
          Rule("decoder.final_layernorm.weight", ("model.norm.weight",))]
_OUTPUT = Rule("output_layer.weight", ("lm_head.weight",), VOCAB)
_ATTENTION = [
    Rule(L + "input_layernorm.weight", (HL + "input_layernorm.weight",)),
    Rule(L + "self_attention.linear_qkv.weight",
         tuple(HL + f"self_attn.{p}_proj.weight" for p in "qkv"), QKV_FUSED),
    Rule(L + "self_attention.linear_proj.weight", (HL + "self_attn.o_proj.weight",)),
    Rule(L + "pre_mlp_layernorm.weight", (HL + "post_attention_layernorm.weight",)),
]
_QK_NORM = [Rule(L + "self_attention.q_layernorm.weight", (HL + "self_attn.q_norm.weight",)),
            Rule(L + "self_attention.k_layernorm.weight", (HL + "self_attn.k_norm.weight",))]


def _swiglu(meg: str, hf: str, gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj") -> list[Rule]:
    return [Rule(meg + "linear_fc1.weight", (hf + gate + ".weight", hf + up + ".weight"), GATE_UP),
            Rule(meg + "linear_fc2.weight", (hf + down + ".weight",))]


_EXPERT = L + "mlp.experts.local_experts.{e}."
HF_EXPERTS = {"mixtral": ("block_sparse_moe.experts.{e}.", "w1", "w3", "w2"),
              "qwen3_moe": ("mlp.experts.{e}.", "gate_proj", "up_proj", "down_proj"),
              "qwen2_moe": ("mlp.experts.{e}.", "gate_proj", "up_proj", "down_proj")}
"""Per-expert HF checkpoint names under `model.layers.{i}.`: (prefix, gate, up, down)."""


def _hf_experts(arch: str) -> list[Rule]:
    prefix, gate, up, down = HF_EXPERTS[arch]
    return _swiglu(_EXPERT, HL + prefix, gate, up, down)


TABLES: dict[str, list[Rule]] = {
    "llama": _ATTENTION + _swiglu(L + "mlp.", HL + "mlp."),
    "mixtral": _ATTENTION + [Rule(L + "mlp.router.weight", (HL + "block_sparse_moe.gate.weight",))]
    + _hf_experts("mixtral"),
    "qwen3_moe": _ATTENTION + _QK_NORM + [Rule(L + "mlp.router.weight", (HL + "mlp.gate.weight",))]
    + _hf_experts("qwen3_moe"),
    "qwen2_moe": _ATTENTION + [Rule(L + "mlp.router.weight", (HL + "mlp.gate.weight",)),
                               Rule(L + "mlp.shared_experts.gate_weight", (HL + "mlp.shared_expert_gate.weight",))]
    + _hf_experts("qwen2_moe") + _swiglu(L + "mlp.shared_experts.", HL + "mlp.shared_expert."),
}


def entries(arch: str, m: ModelConfig) -> Iterator[Entry]:
    """The table of `arch` expanded over the layers and experts of `m`, in checkpoint order."""
    experts = m.moe.num_experts if m.moe else 0
    rules = _EMBED + TABLES[arch] + ([_OUTPUT] if m.untie_embeddings_and_output_weights else [])
    for rule in rules:
        layers = range(m.num_layers) if "{i}" in rule.megatron else [None]
        for i in layers:
            for e in (range(experts) if "{e}" in rule.megatron else [None]):
                yield Entry(rule.megatron.format(i=i, e=e), tuple(h.format(i=i, e=e) for h in rule.hf),
                            rule.transform)
