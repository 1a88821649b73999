"""A tiny dense Megatron checkpoint (weights scaled up so logits are O(1)) and an upcycle runner."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from factory.train.checkpoint_meta import CheckpointMeta
from tests.conftest import TINY_DENSE, make_config

DENSE_META = CheckpointMeta(stage="pretrain", final_lr=3e-4, lineage_tokens=4096, run_tokens=4096)
MOE = {"num_experts": 4, "router_topk": 2, "token_dispatcher": "allgather"}


def save_dense(root: Path, seed: int = 0, iteration: int = 7, meta: CheckpointMeta = DENSE_META,
               **model_overrides) -> Path:
    """A random dense checkpoint of TINY_DENSE (at iteration 7 unless told), saved at TP=1."""
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint import save

    raw = copy.deepcopy(TINY_DENSE)
    raw["model"].update(model_overrides)
    cfg = make_config(raw)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        model = build_gpt_model(cfg.model, rt)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():  # trained-looking magnitudes: logits of order 1, not 1e-2
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        save(root, iteration, model, cfg.model, rt, meta=meta)
    return root


@pytest.fixture(scope="session")
def dense_ckpt(tmp_path_factory) -> Path:
    return save_dense(tmp_path_factory.mktemp("dense") / "checkpoints")


def upcycle_config(run_dir: Path, source: Path, model: dict | None = None, **section):
    """A validated config with an `upcycle:` section (MOE unless section['moe'] is given)."""
    raw = copy.deepcopy(TINY_DENSE)
    raw["run"]["dir"] = str(run_dir)
    raw["model"].update(model or {})
    moe = {**MOE, **section.pop("moe", {})}
    raw["upcycle"] = {"source": str(source), "moe": moe, **section}
    from factory.config import validate_config

    return validate_config(raw)


def run_upcycle(run_dir: Path, source: Path, **section) -> dict:
    """Run the stage in-process; returns the manifest as written."""
    from factory.runner import run_stage
    from factory.registry import STAGES

    cfg = upcycle_config(run_dir, source, **section)
    manifest = run_stage(STAGES["upcycle"], cfg)
    return json.loads((manifest.out_dir / "manifest.json").read_text())
