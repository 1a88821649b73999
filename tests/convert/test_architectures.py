"""One class per HF architecture: its table covers the stock transformers model, its refusals name the key."""

from __future__ import annotations

import pytest

from factory.convert import architectures
from factory.convert.hf_config import hf_config, model_config
from factory.convert.mapping import entries
from factory.errors import ConfigError
from factory.model.config import ModelConfig
from tests.conftest import TINY_DENSE

QWEN2_MOE = {"model_type": "qwen2_moe", "num_attention_heads": 4, "hidden_size": 64, "num_hidden_layers": 2,
             "intermediate_size": 128, "max_position_embeddings": 64, "vocab_size": 256, "rms_norm_eps": 1e-6,
             "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
             "shared_expert_intermediate_size": 64, "norm_topk_prob": True}


def _model(arch: str) -> ModelConfig:
    raw = dict(TINY_DENSE["model"])
    moe = {"num_experts": 4, "router_topk": 2}
    if arch == "qwen2_moe":
        moe.update(shared_expert_ffn_hidden_size=64, shared_expert_gate=True)
    if arch != "llama":
        raw["moe"] = moe
    return ModelConfig.model_validate({**raw, "qk_layernorm": arch == "qwen3_moe"})


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_table_names_exactly_the_tensors_stock_transformers_saves(name, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    arch, m = architectures.get(name), _model(name)
    assert arch.blockers(m) == []
    AutoModelForCausalLM.from_config(hf_config(m, arch, {})).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    mapped = {h for entry in entries(arch.rules(), m) for h in entry.hf}
    assert mapped == saved
    assert len([h for h in mapped if ".experts." in h]) == (m.num_layers * 4 * 3 if m.moe else 0)


def test_qwen2_moe_without_a_qkv_bias_key_is_refused_by_its_transformers_default():
    with pytest.raises(ConfigError) as info:
        model_config(QWEN2_MOE, seq_length=None, make_vocab_size_divisible_by=128, token_dispatcher="allgather")
    assert info.value.problems == ["hf_import: qwen2_moe: qkv_bias=True (the Qwen2MoeForCausalLM default: "
                                   "config.json does not set it): our model has no attention or MLP biases"]
    arch, m = model_config({**QWEN2_MOE, "qkv_bias": False}, seq_length=None, make_vocab_size_divisible_by=128,
                           token_dispatcher="allgather")
    assert arch.name == "qwen2_moe" and m.moe.shared_expert_ffn_hidden_size == 64 and not m.moe.router_pre_softmax


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(ConfigError, match=r"model_type='gpt2': not supported \(supported: llama, mixtral, "
                                          r"qwen3_moe, qwen2_moe\)"):
        architectures.get("gpt2", "model_type")
