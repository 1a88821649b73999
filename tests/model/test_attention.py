"""SdpaAttention against Megatron's DotProductAttention: module outputs, whole-model logits/grads, errors."""

import copy
import types

import pytest
import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from factory.model.attention import SdpaAttention
from factory.model.build import build_gpt_model, transformer_config
from tests.conftest import TINY_DENSE, TINY_MOE, make_config

SEQ, BATCH = 16, 2


def _pair(runtime, tp=1, **overrides):
    """(DotProductAttention, SdpaAttention) built alike from the tiny config (4 heads, 2 groups)."""
    config = transformer_config(make_config(TINY_DENSE, model=overrides).model, runtime)
    pg = None
    if tp > 1:  # only the group's size is read at construction: per-partition heads
        pg = types.SimpleNamespace(tp=types.SimpleNamespace(size=lambda: tp))
    kw = dict(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal,
              attention_type="self", pg_collection=pg)
    return DotProductAttention(**kw), SdpaAttention(**kw)


def _qkv(heads=4, groups=2, head_dim=16, seq=SEQ):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(seq, BATCH, heads, head_dim, generator=gen)
    k, v = (torch.randn(seq, BATCH, groups, head_dim, generator=gen) for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("tp", [1, 2])
def test_causal_gqa_matches_dot_product_attention(runtime, tp):
    ref, sdpa = _pair(runtime, tp=tp)
    q, k, v = _qkv(heads=4 // tp, groups=2 // tp)
    out = sdpa(q, k, v, None, attn_mask_type=AttnMaskType.causal)
    assert out.shape == (SEQ, BATCH, 4 // tp * 16)
    assert (out - ref(q, k, v, None)).abs().max() <= 1e-5


def test_explicit_mask_matches_dot_product_attention(runtime):
    ref, sdpa = _pair(runtime)
    q, k, v = _qkv()
    mask = torch.rand(BATCH, 1, SEQ, SEQ, generator=torch.Generator().manual_seed(1)) < 0.4
    mask[0, 0, 3] = True  # a fully masked query row: Megatron gives it uniform weights
    out = sdpa(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert (out - ref(q, k, v, mask)).abs().max() <= 1e-5


def test_no_gqa_and_softmax_scale(runtime):
    ref, sdpa = _pair(runtime, num_query_groups=4)
    q, k, v = _qkv(groups=4)
    assert (sdpa(q, k, v, None) - ref(q, k, v, None)).abs().max() <= 1e-5
    config = copy.copy(sdpa.config)
    config.softmax_scale = 0.5
    scaled = SdpaAttention(config, 1, AttnMaskType.causal, "self")
    assert scaled.softmax_scale == 0.5 and sdpa.softmax_scale == pytest.approx(16 ** -0.5)


def test_dropout_uses_megatron_rng_tracker(runtime):
    from megatron.core import tensor_parallel

    _, sdpa = _pair(runtime, attention_dropout=0.5)
    q, k, v = _qkv()
    eval_out = sdpa.eval()(q, k, v, None)
    sdpa.train()
    tracker = tensor_parallel.get_cuda_rng_tracker()
    saved, global_state = tracker.get_states(), torch.get_rng_state()
    first = sdpa(q, k, v, None)
    assert torch.equal(torch.get_rng_state(), global_state)  # drew from the tracker's state
    second = sdpa(q, k, v, None)
    tracker.set_states(saved)
    assert torch.equal(sdpa(q, k, v, None), first) and not torch.equal(first, second)
    assert not torch.allclose(first, eval_out)


def test_unsupported_inputs_are_rejected(runtime):
    ref, sdpa = _pair(runtime)
    q, k, v = _qkv()
    cases = {
        "packed_seq_params": lambda: sdpa(q, k, v, None, packed_seq_params=object()),
        "attention_bias": lambda: sdpa(q, k, v, None, attention_bias=torch.zeros(1)),
        "sq=16 != sk=8": lambda: sdpa(q, k[:8], v[:8], None),
        "dtype torch.float32": lambda: sdpa(q, k, v, torch.zeros(BATCH, 1, SEQ, SEQ)),
        "padding_causal": lambda: sdpa(q, k, v, None, attn_mask_type=AttnMaskType.padding_causal),
    }
    for what, call in cases.items():
        with pytest.raises(NotImplementedError, match=what):
            call()
    for field, value, what in [("context_parallel_size", 2, "context_parallel_size=2"),
                               ("window_size", (4, 0), "sliding-window"),
                               ("softmax_type", "learnable", "softmax_type")]:
        config = copy.copy(sdpa.config)
        setattr(config, field, value)
        with pytest.raises(NotImplementedError, match=what):
            SdpaAttention(config, 1, AttnMaskType.causal, "self")


def _logits_and_grads(model, tokens, pos):
    model.zero_grad(set_to_none=True)
    logits = model(tokens, pos, None)
    (logits.float() ** 2).mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("base", [TINY_DENSE, TINY_MOE], ids=["dense", "moe8"])
def test_gpt_sdpa_matches_local(base, runtime):
    models = {}
    for name in ("sdpa", "local"):
        cfg = make_config(base, model={"attention": name})
        models[name] = build_gpt_model(cfg.model, runtime)
    core = {n: type(m.decoder.layers[0].self_attention.core_attention) for n, m in models.items()}
    assert core == {"sdpa": SdpaAttention, "local": DotProductAttention}
    models["local"].load_state_dict(models["sdpa"].state_dict(), strict=True)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.seq_length), generator=gen)
    pos = torch.arange(cfg.model.seq_length).expand(2, -1)
    logits, grads = _logits_and_grads(models["sdpa"], tokens, pos)
    ref_logits, ref_grads = _logits_and_grads(models["local"], tokens, pos)
    assert (logits - ref_logits).abs().max() <= 1e-5
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), name
