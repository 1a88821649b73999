"""A dense model and its step-0 MoE copy (every expert = the dense MLP, zero router) export to the same logits."""

from __future__ import annotations

import re

import torch

from factory.convert.export import export_checkpoint
from factory.convert.verify import hf_logits
from factory.runtime.config import RuntimeConfig
from tests.conftest import TINY_DENSE, TINY_MOE, make_config
from tests.convert.conftest import save_megatron

CPU = RuntimeConfig(device="cpu", precision="fp32")


def _upcycle_by_copy(dense_root, moe_root) -> None:
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint import load, save

    cfg = make_config(TINY_MOE)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        dense = build_gpt_model(make_config(TINY_DENSE).model, rt)
        load(dense_root, dense, rt, restore_rng=False)
        source = dense.state_dict()
        moe = build_gpt_model(cfg.model, rt)
        target = moe.state_dict()
        for key, tensor in target.items():
            if key.endswith("_extra_state"):
                continue
            dense_key = re.sub(r"mlp\.experts\.local_experts\.\d+\.", "mlp.", key)
            with torch.no_grad():
                tensor.copy_(torch.zeros_like(tensor) if key.endswith("router.weight") else source[dense_key])
        save(moe_root, 0, moe, cfg.model, rt)


def test_moe_at_step_0_exports_to_the_dense_logits(tmp_path, tokenizer_dir):
    save_megatron(tmp_path / "dense", TINY_DENSE)
    _upcycle_by_copy(tmp_path / "dense", tmp_path / "moe")
    dense = export_checkpoint(tmp_path / "dense", tmp_path / "hf_dense", runtime_cfg=CPU, tokenizer_dir=tokenizer_dir)
    moe = export_checkpoint(tmp_path / "moe", tmp_path / "hf_moe", runtime_cfg=CPU, tokenizer_dir=tokenizer_dir)
    assert (dense.architecture, moe.architecture) == ("llama", "mixtral")
    tokens = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    diff = (hf_logits(tmp_path / "hf_dense", tokens) - hf_logits(tmp_path / "hf_moe", tokens)).abs().max().item()
    assert diff <= 1e-4
