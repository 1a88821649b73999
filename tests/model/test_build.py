"""GPTModel from model configs: dense and MoE forward/backward, parameter counts, config mapping."""

import pytest
import torch

from factory.model.build import build_gpt_model, parameter_counts, transformer_config
from tests.conftest import TINY_DENSE, TINY_MOE, make_config


def _batch(cfg, batch=2):
    gen = torch.Generator().manual_seed(0)
    seq = cfg.model.seq_length
    tokens = torch.randint(0, cfg.model.vocab_size, (batch, seq), generator=gen)
    return tokens, torch.arange(seq).expand(batch, seq)


@pytest.mark.parametrize("base", [TINY_DENSE, TINY_MOE], ids=["dense", "moe8"])
def test_forward_backward_on_cpu(base, runtime):
    cfg = make_config(base)
    model = build_gpt_model(cfg.model, runtime)
    tokens, pos = _batch(cfg)
    labels = torch.roll(tokens, -1, dims=1)
    loss = model(tokens, pos, None, labels=labels)  # per-token losses [b, s]
    assert loss.shape == tokens.shape and torch.isfinite(loss).all()
    loss.mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["embedding.word_embeddings.weight"].abs().sum() > 0
    if cfg.model.moe:
        routers = [g for n, g in grads.items() if n.endswith("router.weight")]
        assert len(routers) == cfg.model.num_layers and all(g.abs().sum() > 0 for g in routers)


@pytest.mark.parametrize("base", [TINY_DENSE, TINY_MOE], ids=["dense", "moe8"])
def test_parameter_count_formula_matches_gptmodel(base, runtime):
    cfg = make_config(base)
    model = build_gpt_model(cfg.model, runtime)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(cfg.model).total


def test_moe_variants_build_and_run(runtime):
    cfg = make_config(TINY_MOE)
    cfg.model.moe = cfg.model.moe.model_copy(update=dict(
        router_score_function="sigmoid", router_pre_softmax=True, z_loss_coeff=1e-3,
        ffn_hidden_size=32, shared_expert_ffn_hidden_size=64, shared_expert_gate=True))
    model = build_gpt_model(cfg.model, runtime)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(cfg.model).total
    names = [n for n, _ in model.named_parameters()]
    assert any("shared_experts" in n for n in names)
    tokens, pos = _batch(cfg, batch=1)
    model(tokens, pos, None).sum().backward()


def test_logits_shape_is_padded_vocab(runtime):
    cfg = make_config(TINY_DENSE)
    model = build_gpt_model(cfg.model, runtime)
    tokens, pos = _batch(cfg, batch=1)
    logits = model(tokens, pos, None)
    assert logits.shape == (1, cfg.model.seq_length, 256)  # 250 padded to a multiple of 128


def test_llama_style_transformer_config(runtime):
    cfg = make_config(TINY_MOE, model={"rotary_base": 500000.0})
    tc = transformer_config(cfg.model, runtime)
    assert tc.normalization == "RMSNorm" and tc.gated_linear_unit and not tc.add_bias_linear
    assert tc.num_query_groups == 2 and tc.num_moe_experts == 8 and tc.moe_router_topk == 2
    assert tc.moe_token_dispatcher_type == "allgather"
    assert not tc.gradient_accumulation_fusion and not tc.apply_rope_fusion  # CPU runtime
    model = build_gpt_model(cfg.model, runtime)
    assert not model.share_embeddings_and_output_weights
    assert model.rotary_pos_emb.inv_freq[1].item() == pytest.approx(500000.0 ** (-2 / 16))


def test_tanuki_8x8b_counts_match_published_sizes():
    from factory.config import load_config

    counts = parameter_counts(load_config("configs/tanuki-8x8b.yaml").model)
    assert 46e9 < counts.total < 48e9  # published: 47B total
    assert 12.5e9 < counts.active < 13.5e9  # published: 13B active


def test_qk_layernorm_adds_per_head_norms(runtime):
    from factory.train.flops import flops_per_token

    plain = make_config(TINY_DENSE).model
    cfg = make_config(TINY_DENSE, model={"qk_layernorm": True})
    model = build_gpt_model(cfg.model, runtime)
    names = [n for n, _ in model.named_parameters() if "q_layernorm" in n or "k_layernorm" in n]
    assert len(names) == 2 * cfg.model.num_layers
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(cfg.model).total
    assert parameter_counts(cfg.model).total - parameter_counts(plain).total == 2 * 16 * 2
    assert flops_per_token(cfg.model) == flops_per_token(plain)  # norms are not matmuls


def _te_layer(num_experts, qk_layernorm, monkeypatch):
    """Megatron's Transformer Engine layer spec, built from its definition without TE installed (the TE classes
    are placeholders then; the spec's structure is what matters here)."""
    from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider
    from megatron.core.models.gpt import gpt_layer_specs as specs

    monkeypatch.setattr(specs, "TESpecProvider", TESpecProvider)
    return specs.get_gpt_layer_with_transformer_engine_submodules(
        num_experts=num_experts, moe_grouped_gemm=False, qk_layernorm=qk_layernorm)


def _te_norm_keys(layer) -> set[str]:
    """Where a TE layer spec stores its norm weights: a norm module of its own, or the norm fused into the
    LayerNorm-linear that follows it; then the layer's keys map, as TransformerLayer.sharded_state_dict applies it."""
    from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider
    from megatron.core.transformer.identity_op import IdentityOp

    fused = TESpecProvider().column_parallel_layer_norm_linear()
    attention, mlp = layer.self_attention.submodules, layer.mlp.keywords["submodules"]
    owners = {"input_layernorm.": layer.input_layernorm, "self_attention.q_layernorm.": attention.q_layernorm,
              "self_attention.k_layernorm.": attention.k_layernorm, "pre_mlp_layernorm.": layer.pre_mlp_layernorm}
    keys = {prefix + "weight" for prefix, module in owners.items() if module is not IdentityOp}
    keys |= {name + ".layer_norm_weight" for name, module in
             (("self_attention.linear_qkv", attention.linear_qkv), ("mlp.linear_fc1", getattr(mlp, "linear_fc1", None)))
             if module is fused}
    mapped = set()
    for key in keys:
        for old, new in layer.sharded_state_dict_keys_map.items():
            key = new + key[len(old):] if key.startswith(old) else key
        mapped.add("decoder.layers." + key)
    return mapped


@pytest.mark.parametrize("base", [TINY_DENSE, TINY_MOE], ids=["dense", "moe8"])
def test_local_layers_store_norms_under_the_transformer_engine_keys(base, runtime, monkeypatch):
    """CPU-local and TE models read and write one layout: the keys come from Megatron's TE spec definition."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    cfg = make_config(base, model={"qk_layernorm": True})
    expected = _te_norm_keys(_te_layer(8 if cfg.model.moe else None, True, monkeypatch))
    stored = {v.key for v in build_gpt_model(cfg.model, runtime).sharded_state_dict().values()
              if isinstance(v, ShardedTensor) and v.key.startswith("decoder.layers.") and "norm" in v.key}
    assert stored == expected
    assert ("decoder.layers.pre_mlp_layernorm.weight" in stored) == bool(cfg.model.moe)
