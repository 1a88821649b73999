"""What one Hugging Face architecture declares: its parameter table, its config fields in both directions,
and what it refuses (with the reason), so that adding an architecture is one file plus one registry line."""

from __future__ import annotations

from typing import Any, ClassVar

from factory.convert.mapping import GATE_UP, QKV_FUSED, Rule
from factory.model.config import ModelConfig

L, HL = "decoder.layers.{i}.", "model.layers.{i}."
"""Megatron and HF name prefixes of layer `{i}`."""
ATTENTION = [
    Rule(L + "input_layernorm.weight", (HL + "input_layernorm.weight",)),
    Rule(L + "self_attention.linear_qkv.weight", tuple(HL + f"self_attn.{p}_proj.weight" for p in "qkv"), QKV_FUSED),
    Rule(L + "self_attention.linear_proj.weight", (HL + "self_attn.o_proj.weight",)),
    Rule(L + "pre_mlp_layernorm.weight", (HL + "post_attention_layernorm.weight",)),
]
QK_NORM = [Rule(L + "self_attention.q_layernorm.weight", (HL + "self_attn.q_norm.weight",)),
           Rule(L + "self_attention.k_layernorm.weight", (HL + "self_attn.k_norm.weight",))]
LOCAL_EXPERT = L + "mlp.experts.local_experts.{e}."


def swiglu(megatron: str, hf: str, gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj") -> list[Rule]:
    """A SwiGLU MLP: Megatron's fused linear_fc1 = cat(gate, up), linear_fc2 = down."""
    return [Rule(megatron + "linear_fc1.weight", (hf + gate + ".weight", hf + up + ".weight"), GATE_UP),
            Rule(megatron + "linear_fc2.weight", (hf + down + ".weight",))]


class HfArchitecture:
    """Base of the per-architecture classes; subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]
    """The HF `model_type`."""
    hf_class: ClassVar[str]
    """The `architectures[0]` of its config.json."""
    experts: ClassVar[tuple[str, str, str, str] | None] = None
    """Per-expert checkpoint names under `model.layers.{i}.`: (prefix with `{e}`, gate, up, down)."""
    bias_defaults: ClassVar[dict[str, bool]] = {}
    """Bias switches of its HF config and their transformers defaults (applied when config.json omits them)."""
    sliding_window_needs_flag: ClassVar[bool] = False
    """Its config keeps a `sliding_window` size that only applies with `use_sliding_window` (Qwen2-MoE)."""

    def rules(self) -> list[Rule]:
        """Layer parameters (embedding, final norm and output layer are shared by every architecture)."""
        raise NotImplementedError

    def expert_rules(self) -> list[Rule]:
        prefix, gate, up, down = self.experts
        return swiglu(LOCAL_EXPERT, HL + prefix, gate, up, down)

    @property
    def mlp_prefix(self) -> str:
        """The checkpoint name of the HF module's `mlp.` (Mixtral keeps its experts under `block_sparse_moe.`)."""
        return self.experts[0].removesuffix("experts.{e}.") if self.experts else "mlp."

    def blockers(self, m: ModelConfig) -> list[str]:
        """Settings of `m` that keep this architecture from computing the same function; [] when it fits."""
        raise NotImplementedError

    def hf_fields(self, m: ModelConfig) -> dict[str, Any]:
        """Architecture-specific HF config fields for `m` (the shared ones are written by hf_config)."""
        return {}

    def import_problems(self, hf: dict) -> list[str]:
        """What of an HF config.json our model cannot represent, beyond the shared checks."""
        return []

    def model_fields(self, hf: dict) -> dict[str, Any]:
        """Architecture-specific ModelConfig fields read from an HF config.json."""
        return {}

    def moe_fields(self, hf: dict) -> dict[str, Any] | None:
        """Architecture-specific `model.moe` fields read from an HF config.json; None for a dense model."""
        return None


def moe_blockers(m: ModelConfig, hf_class: str) -> list[str]:
    """Refusals every HF MoE architecture shares (softmax routers, no top-k scaling)."""
    moe = m.moe
    if moe is None:
        return [f"model.moe is not set: {hf_class} needs experts"]
    out = []
    if moe.router_score_function != "softmax":
        out.append(f"model.moe.router_score_function={moe.router_score_function}: HF MoE routers use softmax")
    if moe.router_topk_scaling_factor not in (None, 1.0):
        out.append(f"model.moe.router_topk_scaling_factor={moe.router_topk_scaling_factor}: "
                   "HF MoE routers do not scale the top-k weights")
    return out


def no_shared_expert(m: ModelConfig, hf_class: str) -> list[str]:
    shared = m.moe.shared_expert_ffn_hidden_size if m.moe else None
    return [] if shared is None else [f"model.moe.shared_expert_ffn_hidden_size={shared}: {hf_class} has no shared "
                                      "expert (qwen2_moe does)"]


def no_qk_norm(m: ModelConfig, hf_class: str) -> list[str]:
    return [f"model.qk_layernorm=true: {hf_class} has no q/k norm"] if m.qk_layernorm else []


def value(hf: dict, key: str, default: Any = None) -> Any:
    """`hf[key]`, or `default` when absent or null."""
    got = hf.get(key, default)
    return default if got is None else got
