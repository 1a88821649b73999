"""The exactness table and the expert scale, and the pure FFN split, without building models."""

import pytest
import torch

from factory.model.config import MoEConfig
from factory.upcycle.routing import exactness_problem, expert_scale
from factory.upcycle.target import ExpertPlan
from factory.upcycle.transform import mlp_keys, mlp_tensor


def _moe(**kw) -> MoEConfig:
    return MoEConfig(**{"num_experts": 8, "router_topk": 2, **kw})


@pytest.mark.parametrize("kw, router, granularity, scale", [
    ({}, "random", 1, 1.0),
    ({}, "zero", 1, 1.0),
    ({"router_topk": 4}, "random", 4, 4.0),
    ({"router_pre_softmax": True}, "zero", 1, 4.0),              # weights k/E = 1/4
    ({"router_pre_softmax": True, "router_topk": 1}, "zero", 1, 8.0),
    ({"router_score_function": "sigmoid"}, "random", 1, 1.0),    # normalized over the top-k
    ({"router_score_function": "sigmoid", "router_topk": 1}, "zero", 1, 2.0),  # sigmoid(0) = 1/2
    ({"router_topk_scaling_factor": 2.0, "router_topk": 4}, "random", 2, 1.0),
])
def test_exact_combinations_and_their_scale(kw, router, granularity, scale):
    moe = _moe(**kw)
    assert exactness_problem(moe, granularity, router) is None
    assert expert_scale(moe, granularity, router) == pytest.approx(scale)


@pytest.mark.parametrize("kw, router, granularity, words", [
    ({}, "zero", 2, "tie"),
    ({"router_pre_softmax": True}, "random", 1, "token-dependent"),
    ({"router_score_function": "sigmoid", "router_topk": 1}, "random", 1, "sigmoid(logit)"),
])
def test_inexact_combinations_say_why(kw, router, granularity, words):
    assert words in exactness_problem(_moe(**kw), granularity, router)


def _ffn(fc1, fc2, x):
    gate, up = fc1.chunk(2)
    return (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ fc2.T


def _upcycle(fc1, fc2, plan, layer=0):
    """Every MoE tensor of one layer, each made on its own from the dense FFN."""
    dense = {"linear_fc1.weight": fc1, "linear_fc2.weight": fc2}
    return {k: mlp_tensor(k, dense.__getitem__, plan, fc2.shape[0], fc1.dtype, 0, layer) for k in mlp_keys(plan)}


def test_granular_shards_of_one_copy_sum_to_the_dense_ffn():
    gen = torch.Generator().manual_seed(0)
    fc1, fc2, x = torch.randn(2 * 48, 16, generator=gen), torch.randn(16, 48, generator=gen), torch.randn(5, 16)
    plan = ExpertPlan(num_experts=6, granularity=3, alpha=1.0, shared_size=12)
    out = _upcycle(fc1, fc2, plan)
    copy1 = sum(_ffn(out[f"experts.local_experts.{e}.linear_fc1.weight"],
                     out[f"experts.local_experts.{e}.linear_fc2.weight"], x) for e in (3, 4, 5))
    shared = _ffn(out["shared_experts.linear_fc1.weight"], out["shared_experts.linear_fc2.weight"], x)
    torch.testing.assert_close(shared + copy1, _ffn(fc1, fc2, x), rtol=1e-5, atol=1e-5)
    router = out["router.weight"]
    assert torch.equal(router[3], router[5]) and not torch.equal(router[0], router[3])  # one row per copy


def test_drop_reinitializes_a_different_fraction_per_expert():
    gen = torch.Generator().manual_seed(0)
    fc1, fc2 = torch.randn(2 * 40, 8, generator=gen), torch.randn(8, 40, generator=gen)
    plan = ExpertPlan(num_experts=4, granularity=1, alpha=1.0, drop_fraction=0.25)
    out = _upcycle(fc1, fc2, plan)
    kept = [(out[f"experts.local_experts.{e}.linear_fc2.weight"] == fc2).all(0) for e in range(4)]
    assert all(int((~k).sum()) == 10 for k in kept)  # 25% of 40 neurons re-drawn
    assert not torch.equal(kept[0], kept[1])
    for e in range(4):  # fc1 re-draws the same neurons (gate and up rows) as fc2's columns
        gate, up = out[f"experts.local_experts.{e}.linear_fc1.weight"].chunk(2)
        assert torch.equal((gate == fc1[:40]).all(1), kept[e]) and torch.equal((up == fc1[40:]).all(1), kept[e])
    assert not torch.equal(_upcycle(fc1, fc2, plan, layer=1)["experts.local_experts.0.linear_fc2.weight"],
                           out["experts.local_experts.0.linear_fc2.weight"])  # each layer draws its own


def test_tensors_do_not_depend_on_the_order_they_are_made_in():
    gen = torch.Generator().manual_seed(1)
    fc1, fc2 = torch.randn(2 * 24, 8, generator=gen), torch.randn(8, 24, generator=gen)
    plan = ExpertPlan(num_experts=4, granularity=2, alpha=2.0, drop_fraction=0.5, noise_std=0.01)
    dense = {"linear_fc1.weight": fc1, "linear_fc2.weight": fc2}
    keys = mlp_keys(plan)
    forward = {k: mlp_tensor(k, dense.__getitem__, plan, 8, fc1.dtype, 3, 2) for k in keys}
    backward = {k: mlp_tensor(k, dense.__getitem__, plan, 8, fc1.dtype, 3, 2) for k in reversed(keys)}
    assert all(torch.equal(forward[k], backward[k]) for k in keys)
