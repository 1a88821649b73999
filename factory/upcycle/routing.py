"""Which routing settings let an upcycled MoE equal its dense parent, and the expert scale that does it.

Each routed expert (r, g) is shard g of FFN copy r, so an MoE layer computes
    sum over selected (r, g) of  w_rg * alpha * FFN_g(x),        FFN = sum_g FFN_g.
The G experts of copy r share one router row, so their logits tie exactly and top-k with k = G k'
selects whole copies (no tie-breaking involved as long as different copies' logits differ). Step 0 is
exact when the selected weights sum to a constant P for every token; then alpha = G / (s P), with s the
router_topk_scaling_factor (1 when unset). alpha multiplies the experts' linear path (linear_fc2),
never the SwiGLU gate, so it is exact for SwiGLU (cube-root scaling of all three matrices is not).

| score, order                | router | P        | exact                                        |
|-----------------------------|--------|----------|----------------------------------------------|
| softmax, top-k then softmax | random | 1        | yes, any G and k                             |
| softmax, top-k then softmax | zero   | 1        | G = 1 only (G > 1: ties across copies)       |
| softmax, softmax then top-k | zero   | k / E    | G = 1 only                                   |
| softmax, softmax then top-k | random | varies   | no                                           |
| sigmoid, k > 1 (normalized) | random | 1        | yes, any G                                   |
| sigmoid, k > 1 (normalized) | zero   | 1        | G = 1 only                                   |
| sigmoid, k = 1              | zero   | 1/2      | yes (G = 1)                                  |
| sigmoid, k = 1              | random | varies   | no                                           |
"""

from __future__ import annotations

from factory.model.config import MoEConfig

_TIES = ("a zero router ties every logit, so which experts top-k picks is up to tie-breaking and "
         "whole FFN copies are not guaranteed; use router_init: random for granularity > 1")


def exactness_problem(moe: MoEConfig, granularity: int, router_init: str) -> str | None:
    """Why the step-0 output cannot equal the dense FFN with these settings, or None if it can."""
    zero = router_init == "zero"
    if zero and granularity > 1:
        return _TIES
    if moe.router_score_function == "softmax" and moe.router_pre_softmax and not zero:
        return ("softmax-then-top-k weights sum to a token-dependent value below 1 with a random router; "
                "use router_init: zero (weights k/E, compensated exactly) or router_pre_softmax: false")
    if moe.router_score_function == "sigmoid" and moe.router_topk == 1 and not zero:
        return ("top-1 sigmoid weights are sigmoid(logit), which varies per token with a random router; "
                "use router_init: zero (weight 1/2, compensated exactly) or router_topk > 1")
    return None


def selected_weight_sum(moe: MoEConfig, router_init: str) -> float:
    """P: the sum of the selected experts' routing weights (before the scaling factor).

    Exact where `exactness_problem` is None; otherwise the value under uniform scores (drop/noise runs).
    """
    if moe.router_score_function == "softmax" and moe.router_pre_softmax:
        return moe.router_topk / moe.num_experts
    if moe.router_score_function == "sigmoid" and moe.router_topk == 1:
        return 0.5
    return 1.0


def expert_scale(moe: MoEConfig, granularity: int, router_init: str) -> float:
    """alpha = G / (s P): the factor on each routed expert's linear_fc2."""
    s = moe.router_topk_scaling_factor or 1.0
    return granularity / (s * selected_weight_sum(moe, router_init))
