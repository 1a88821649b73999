"""Qwen3-MoE and Qwen2-MoE: softmax, top-k, renormalized only if `norm_topk_prob` (so `norm_topk_prob =
not router_pre_softmax`); experts `mlp.experts.{e}.gate_proj/up_proj/down_proj`, router `mlp.gate`.
Qwen3-MoE always applies per-head q/k RMSNorm; Qwen2-MoE always has a sigmoid-gated shared expert and,
by the transformers default, QKV biases (which our model does not have)."""

from __future__ import annotations

from typing import Any

from factory.convert.architectures.base import (
    ATTENTION,
    HL,
    QK_NORM,
    HfArchitecture,
    L,
    moe_blockers,
    no_qk_norm,
    no_shared_expert,
    swiglu,
    value,
)
from factory.convert.mapping import Rule
from factory.model.config import ModelConfig

ROUTER = Rule(L + "mlp.router.weight", (HL + "mlp.gate.weight",))


class _QwenMoe(HfArchitecture):
    experts = ("mlp.experts.{e}.", "gate_proj", "up_proj", "down_proj")

    def hf_fields(self, m: ModelConfig) -> dict[str, Any]:
        moe = m.moe
        return {"num_experts": moe.num_experts, "num_experts_per_tok": moe.router_topk,
                "moe_intermediate_size": moe.ffn_hidden_size or m.ffn_hidden_size,
                "norm_topk_prob": not moe.router_pre_softmax, "router_aux_loss_coef": moe.aux_loss_coeff,
                "decoder_sparse_step": 1, "mlp_only_layers": [], "use_sliding_window": False}

    def import_problems(self, hf: dict) -> list[str]:
        if hf.get("mlp_only_layers") or value(hf, "decoder_sparse_step", 1) != 1:
            return ["mlp_only_layers/decoder_sparse_step: every layer must be an MoE layer"]
        return []

    def moe_fields(self, hf: dict) -> dict[str, Any]:
        return {"ffn_hidden_size": hf["moe_intermediate_size"],
                "router_pre_softmax": not hf.get("norm_topk_prob", False)}


class Qwen3Moe(_QwenMoe):
    name = "qwen3_moe"
    hf_class = "Qwen3MoeForCausalLM"
    bias_defaults = {"attention_bias": False}

    def rules(self):
        return ATTENTION + QK_NORM + [ROUTER] + self.expert_rules()

    def blockers(self, m: ModelConfig) -> list[str]:
        out = moe_blockers(m, self.hf_class)
        if m.moe is None:
            return out
        out += no_shared_expert(m, self.hf_class)
        return out + ([] if m.qk_layernorm else ["model.qk_layernorm is not set: Qwen3-MoE always applies "
                                                 "per-head q/k RMSNorm"])

    def hf_fields(self, m: ModelConfig) -> dict[str, Any]:
        return {**super().hf_fields(m), "attention_bias": False}

    def model_fields(self, hf: dict) -> dict[str, Any]:
        return {"qk_layernorm": True}


class Qwen2Moe(_QwenMoe):
    name = "qwen2_moe"
    hf_class = "Qwen2MoeForCausalLM"
    bias_defaults = {"qkv_bias": True}
    sliding_window_needs_flag = True

    def rules(self):
        return ATTENTION + [ROUTER, Rule(L + "mlp.shared_experts.gate_weight", (HL + "mlp.shared_expert_gate.weight",))] \
            + self.expert_rules() + swiglu(L + "mlp.shared_experts.", HL + "mlp.shared_expert.")

    def blockers(self, m: ModelConfig) -> list[str]:
        out = moe_blockers(m, self.hf_class)
        if m.moe is None:
            return out
        if m.moe.shared_expert_ffn_hidden_size is None:
            out.append("model.moe.shared_expert_ffn_hidden_size is not set: Qwen2-MoE always has a shared expert")
        elif not m.moe.shared_expert_gate:
            out.append("model.moe.shared_expert_gate=false: Qwen2-MoE always gates its shared expert")
        return out + no_qk_norm(m, self.hf_class)

    def hf_fields(self, m: ModelConfig) -> dict[str, Any]:
        return {**super().hf_fields(m), "shared_expert_intermediate_size": m.moe.shared_expert_ffn_hidden_size,
                "qkv_bias": False}

    def moe_fields(self, hf: dict) -> dict[str, Any]:
        return {**super().moe_fields(hf), "shared_expert_ffn_hidden_size": hf["shared_expert_intermediate_size"],
                "shared_expert_gate": True}
