"""Mixtral (MixtralForCausalLM): softmax over all experts, top-k, renormalize (= Megatron's
`router_pre_softmax=false`); experts saved as `block_sparse_moe.experts.{e}.w1/w3/w2`, router `gate`."""

from __future__ import annotations

from typing import Any

from factory.convert.architectures.base import (
    ATTENTION,
    HL,
    HfArchitecture,
    L,
    moe_blockers,
    no_qk_norm,
    no_shared_expert,
)
from factory.convert.mapping import Rule
from factory.model.config import ModelConfig


class Mixtral(HfArchitecture):
    name = "mixtral"
    hf_class = "MixtralForCausalLM"
    experts = ("block_sparse_moe.experts.{e}.", "w1", "w3", "w2")

    def rules(self):
        return ATTENTION + [Rule(L + "mlp.router.weight", (HL + "block_sparse_moe.gate.weight",))] + \
            self.expert_rules()

    def blockers(self, m: ModelConfig) -> list[str]:
        out = moe_blockers(m, self.hf_class)
        if m.moe is None:
            return out
        out += no_shared_expert(m, self.hf_class)
        if m.moe.router_pre_softmax:
            out.append("model.moe.router_pre_softmax=true: Mixtral renormalizes the top-k weights")
        return out + no_qk_norm(m, self.hf_class)

    def hf_fields(self, m: ModelConfig) -> dict[str, Any]:
        moe = m.moe
        return {"num_local_experts": moe.num_experts, "num_experts_per_tok": moe.router_topk,
                "intermediate_size": moe.ffn_hidden_size or m.ffn_hidden_size,
                "router_aux_loss_coef": moe.aux_loss_coeff, "sliding_window": None}

    def moe_fields(self, hf: dict) -> dict[str, Any]:
        return {}
