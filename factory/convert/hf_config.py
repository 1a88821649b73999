"""ModelConfig <-> Hugging Face config.json, and which HF architecture computes the same function.

Routing equivalences (softmax score function, no top-k scaling):
- Mixtral: softmax over all experts, top-k, renormalize == Megatron `router_pre_softmax=false`.
- Qwen3-MoE / Qwen2-MoE: softmax, top-k, renormalize only if `norm_topk_prob`; so
  `norm_topk_prob = not router_pre_softmax`. Qwen3-MoE always applies per-head q/k RMSNorm, which
  needs `model.qk_layernorm`; Qwen2-MoE always has a sigmoid-gated shared expert.
"""

from __future__ import annotations

from typing import Any

from factory.errors import ConfigError
from factory.model.config import ModelConfig, MoEConfig

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mixtral": "MixtralForCausalLM",
                 "qwen3_moe": "Qwen3MoeForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM"}
SUPPORTED = ", ".join(ARCHITECTURES)


def _blockers(m: ModelConfig, arch: str) -> list[str]:
    """Settings of `m` that keep HF architecture `arch` from computing the same function."""
    moe, out = m.moe, []
    if arch == "llama":
        if moe is not None:
            out.append(f"model.moe is set ({moe.num_experts} experts): LlamaForCausalLM is dense")
        if m.qk_layernorm:
            out.append("model.qk_layernorm=true: LlamaForCausalLM has no q/k norm")
        return out
    if moe is None:
        return [f"model.moe is not set: {ARCHITECTURES[arch]} needs experts"]
    if moe.router_score_function != "softmax":
        out.append(f"model.moe.router_score_function={moe.router_score_function}: HF MoE routers use softmax")
    if moe.router_topk_scaling_factor not in (None, 1.0):
        out.append(f"model.moe.router_topk_scaling_factor={moe.router_topk_scaling_factor}: "
                   "HF MoE routers do not scale the top-k weights")
    shared = moe.shared_expert_ffn_hidden_size is not None
    if arch == "qwen2_moe":
        if not shared:
            out.append("model.moe.shared_expert_ffn_hidden_size is not set: Qwen2-MoE always has a shared expert")
        elif not moe.shared_expert_gate:
            out.append("model.moe.shared_expert_gate=false: Qwen2-MoE always gates its shared expert")
    elif shared:
        out.append(f"model.moe.shared_expert_ffn_hidden_size={moe.shared_expert_ffn_hidden_size}: "
                   f"{ARCHITECTURES[arch]} has no shared expert (qwen2_moe does)")
    if arch == "mixtral" and moe.router_pre_softmax:
        out.append("model.moe.router_pre_softmax=true: Mixtral renormalizes the top-k weights")
    if arch == "qwen3_moe" and not m.qk_layernorm:
        out.append("model.qk_layernorm is not set: Qwen3-MoE always applies per-head q/k RMSNorm")
    if arch != "qwen3_moe" and m.qk_layernorm:
        out.append(f"model.qk_layernorm=true: {ARCHITECTURES[arch]} has no q/k norm")
    return out


def choose_architecture(m: ModelConfig, requested: str = "auto") -> str:
    """`requested`, or under auto the first HF architecture that computes the same function as `m`."""
    if requested != "auto":
        if requested not in ARCHITECTURES:
            raise ConfigError(f"export.architecture={requested}: unsupported (supported: {SUPPORTED})")
        problems = _blockers(m, requested)
        if problems:
            raise ConfigError([f"export.architecture={requested}: {p}" for p in problems])
        return requested
    reasons = {arch: _blockers(m, arch) for arch in ARCHITECTURES}
    for arch, problems in reasons.items():
        if not problems:
            return arch
    lines = ["export: no Hugging Face architecture computes the same function as this model"]
    lines += [f"  {arch}: {'; '.join(p)}" for arch, p in reasons.items()]
    raise ConfigError(lines)


def hf_config(m: ModelConfig, arch: str, special_ids: dict[str, int | None]):
    """A transformers config object for `m` as HF architecture `arch` (vocab = m.vocab_size)."""
    from transformers import AutoConfig

    fields: dict[str, Any] = dict(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.query_groups, head_dim=m.head_dim, hidden_act="silu",
        max_position_embeddings=m.max_position_embeddings or m.seq_length, rms_norm_eps=m.norm_epsilon,
        initializer_range=m.init_method_std, tie_word_embeddings=not m.untie_embeddings_and_output_weights,
        rope_parameters={"rope_type": "default", "rope_theta": m.rotary_base}, attention_dropout=0.0,
        **special_ids)
    moe = m.moe
    if arch == "llama":
        fields.update(attention_bias=False, mlp_bias=False)
    elif arch == "mixtral":
        fields.update(num_local_experts=moe.num_experts, num_experts_per_tok=moe.router_topk,
                      intermediate_size=moe.ffn_hidden_size or m.ffn_hidden_size,
                      router_aux_loss_coef=moe.aux_loss_coeff, sliding_window=None)
    else:
        fields.update(num_experts=moe.num_experts, num_experts_per_tok=moe.router_topk,
                      moe_intermediate_size=moe.ffn_hidden_size or m.ffn_hidden_size,
                      norm_topk_prob=not moe.router_pre_softmax, router_aux_loss_coef=moe.aux_loss_coeff,
                      decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False)
        if arch == "qwen2_moe":
            fields.update(shared_expert_intermediate_size=moe.shared_expert_ffn_hidden_size, qkv_bias=False)
        else:
            fields.update(attention_bias=False)
    config = AutoConfig.for_model(arch, **fields)
    config.architectures = [ARCHITECTURES[arch]]
    return config


def _get(hf: dict, key: str, default: Any = None) -> Any:
    value = hf.get(key, default)
    return default if value is None else value


def _hf_problems(hf: dict, arch: str) -> list[str]:
    out = []
    for key in ("attention_bias", "mlp_bias", "qkv_bias", "use_sliding_window"):
        if hf.get(key):
            out.append(f"{key}={hf[key]}: our model has no biases and no sliding window")
    if arch != "qwen2_moe" and hf.get("sliding_window"):
        out.append(f"sliding_window={hf['sliding_window']}: sliding-window attention is not supported")
    if _get(hf, "hidden_act", "silu") != "silu":
        out.append(f"hidden_act={hf['hidden_act']}: only SwiGLU (silu) is supported")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        out.append(f"rope type {rope_type!r}: only unscaled RoPE is supported")
    if hf.get("mlp_only_layers") or _get(hf, "decoder_sparse_step", 1) != 1:
        out.append("mlp_only_layers/decoder_sparse_step: every layer must be an MoE layer")
    return out


def model_config(hf: dict, *, seq_length: int | None, make_vocab_size_divisible_by: int,
                 token_dispatcher: str) -> tuple[str, ModelConfig]:
    """(architecture, ModelConfig) for an HF config.json dict; refuses what our model cannot represent."""
    arch = hf.get("model_type")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"hf_import: model_type={arch!r} is not supported (supported: {SUPPORTED})")
    problems = _hf_problems(hf, arch)
    if problems:
        raise ConfigError([f"hf_import: {arch}: {p}" for p in problems])
    heads, hidden = hf["num_attention_heads"], hf["hidden_size"]
    head_dim = _get(hf, "head_dim", hidden // heads)
    max_pos = hf["max_position_embeddings"]
    rope = hf.get("rope_parameters") or {}
    fields: dict[str, Any] = dict(
        num_layers=hf["num_hidden_layers"], hidden_size=hidden, ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads, num_query_groups=_get(hf, "num_key_value_heads", heads),
        kv_channels=None if head_dim * heads == hidden else head_dim,
        seq_length=min(seq_length or max_pos, max_pos), max_position_embeddings=max_pos,
        vocab_size=hf["vocab_size"], make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        rotary_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_epsilon=hf["rms_norm_eps"], init_method_std=_get(hf, "initializer_range", 0.02),
        untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", False))
    if arch == "qwen3_moe":
        fields["qk_layernorm"] = True
    if arch != "llama":
        fields["moe"] = _moe_config(hf, arch, token_dispatcher)
    return arch, ModelConfig.model_validate(fields)


def _moe_config(hf: dict, arch: str, token_dispatcher: str) -> MoEConfig:
    moe: dict[str, Any] = dict(router_topk=hf["num_experts_per_tok"], token_dispatcher=token_dispatcher,
                               aux_loss_coeff=_get(hf, "router_aux_loss_coef", 1e-2))
    moe["num_experts"] = hf.get("num_local_experts") or hf["num_experts"]  # Qwen3-MoE saves either name
    if arch == "mixtral":
        return MoEConfig.model_validate(moe)
    moe.update(ffn_hidden_size=hf["moe_intermediate_size"],
               router_pre_softmax=not hf.get("norm_topk_prob", False))
    if arch == "qwen2_moe":
        moe.update(shared_expert_ffn_hidden_size=hf["shared_expert_intermediate_size"], shared_expert_gate=True)
    return MoEConfig.model_validate(moe)
