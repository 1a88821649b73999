"""Shared fixtures: tiny configs, a single-process Megatron runtime and the full eval data folder."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from factory.config import FactoryConfig, validate_config
from factory.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MIRROR_ENV = "FACTORY_EVAL_DATA_MIRROR"


def mirror_beside_checkout() -> Path | None:
    """An offline eval-data mirror in a folder beside the checkout (`../<any>/eval-data` holding jglue/), as the
    project's build machines keep one. Only the `full_eval_data` fixture looks, and only to install from it with
    the project's own `fetch --from`, which checks every file against the pinned checksums."""
    found = sorted(p for p in ROOT.parent.glob("*/eval-data") if (p / "jglue").is_dir())
    return found[0] if found else None

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


@pytest.fixture(scope="session")
def full_eval_data(tmp_path_factory) -> Path:
    """The full eval data folder, found as the eval stage finds it (FACTORY_EVAL_DATA, else the fetched cache);
    failing that, installed into a temporary folder by `fetch --from` out of $FACTORY_EVAL_DATA_MIRROR or the
    build machines' mirror; failing that, the test is skipped with the reason."""
    from factory.evaldata.install import Mirror, fetch
    from factory.evaldata.location import resolve

    try:
        return resolve(None)
    except ConfigError as e:
        missing = str(e)
    mirror = Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else mirror_beside_checkout()
    if mirror is None or not mirror.is_dir():
        pytest.skip(f"{missing}; no mirror beside the checkout either (set {MIRROR_ENV})")
    return fetch(tmp_path_factory.mktemp("eval-data"), Mirror(mirror)).folder
