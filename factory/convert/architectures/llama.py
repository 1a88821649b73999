"""Llama (LlamaForCausalLM): dense SwiGLU decoder, no biases, untied or tied embeddings."""

from __future__ import annotations

from typing import Any

from factory.convert.architectures.base import (
    ATTENTION,
    HL,
    HfArchitecture,
    L,
    no_qk_norm,
    swiglu,
)
from factory.model.config import ModelConfig


class Llama(HfArchitecture):
    name = "llama"
    hf_class = "LlamaForCausalLM"
    bias_defaults = {"attention_bias": False, "mlp_bias": False}

    def rules(self):
        return ATTENTION + swiglu(L + "mlp.", HL + "mlp.")

    def blockers(self, m: ModelConfig) -> list[str]:
        out = [f"model.moe is set ({m.moe.num_experts} experts): {self.hf_class} is dense"] if m.moe else []
        return out + no_qk_norm(m, self.hf_class)

    def hf_fields(self, m: ModelConfig) -> dict[str, Any]:
        return {"attention_bias": False, "mlp_bias": False}
