"""Shared fixtures: tiny configs and a single-process Megatron runtime."""

from __future__ import annotations

import copy

import pytest

from factory.config import FactoryConfig, validate_config

TINY_DENSE = {
    "run": {"name": "test", "dir": "runs/test"},
    "runtime": {"device": "cpu", "precision": "fp32", "seed": 1234},
    "model": {
        "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
        "num_query_groups": 2, "seq_length": 32, "vocab_size": 250,
    },
}
TINY_MOE = copy.deepcopy(TINY_DENSE)
TINY_MOE["model"]["moe"] = {"num_experts": 8, "router_topk": 2, "token_dispatcher": "allgather"}


def make_config(base: dict, **sections) -> FactoryConfig:
    """A validated config from `base` with sections deep-updated by `sections`."""
    raw = copy.deepcopy(base)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return validate_config(raw)


@pytest.fixture
def runtime():
    """A world-of-one CPU runtime, torn down after the test."""
    from factory.runtime.runtime import runtime_session

    cfg = make_config(TINY_DENSE)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        yield rt
