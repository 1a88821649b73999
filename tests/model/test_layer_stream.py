"""LayerStream computes GPTModel.forward one layer at a time: same logits, dense and MoE."""

import pytest
import torch

from tests.conftest import TINY_DENSE, TINY_MOE, make_config


@pytest.mark.parametrize("base, model", [
    (TINY_DENSE, {}),
    (TINY_DENSE, {"qk_layernorm": True, "untie_embeddings_and_output_weights": False}),
    (TINY_MOE, {}),
])
def test_streamed_logits_equal_the_full_forward(runtime, base, model):
    from factory.model.build import build_gpt_model
    from factory.model.layer_stream import LayerStream

    cfg = make_config(base, model=model).model
    full = build_gpt_model(cfg, runtime).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    tokens = torch.randint(0, cfg.vocab_size, (2, 16), generator=gen)
    with torch.no_grad():
        ref = full(tokens, torch.arange(16).expand_as(tokens), None)[..., : cfg.vocab_size]
    weights = full.state_dict()
    seen = []

    def fill(targets):
        seen.extend(targets)
        for name, target in targets.items():
            target.copy_(weights[name])

    logits, hiddens = LayerStream(cfg, runtime).forward(tokens, fill)
    assert len(hiddens) == cfg.num_layers
    assert (logits - ref).abs().max().item() <= 1e-6
    assert set(seen) == {k for k in weights if not k.endswith("_extra_state")}  # every weight was streamed
