"""Llama (LlamaForCausalLM): dense SwiGLU decoder, no biases, untied or tied embeddings."""

from __future__ import annotations

from factory.convert.architectures.base import (
    ATTENTION,
    HL,
    HfArchitecture,
    L,
    no_qk_norm,
    swiglu,
)


class Llama(HfArchitecture):
    name = "llama"
    hf_class = "LlamaForCausalLM"
    bias_defaults = {"attention_bias": False, "mlp_bias": False}

    def rules(self):
        return ATTENTION + swiglu(L + "mlp.", HL + "mlp.")

    def blockers(self, m):
        out = [f"model.moe is set ({m.moe.num_experts} experts): {self.hf_class} is dense"] if m.moe else []
        return out + no_qk_norm(m, self.hf_class)

    def hf_fields(self, m):
        return {"attention_bias": False, "mlp_bias": False}
