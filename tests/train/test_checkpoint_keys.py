"""Checkpoints whose keys differ from the model's in the expected ways still load (factory.train.checkpoint_keys):
MoE checkpoints written in the older key layout, and CPU-written checkpoints read by Transformer Engine layers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import TINY_MOE, make_config

OLD_NORM_KEY = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
NEW_NORM_KEY = "decoder.layers.pre_mlp_layernorm.weight"


def _training_parts(runtime):
    from factory.train.config import TrainConfig
    from factory.train.setup import build_model

    model_cfg = make_config(TINY_MOE).model
    train = TrainConfig.model_validate({"train_iters": 1, "global_batch_size": 2, "micro_batch_size": 2,
                                        "optimizer": {"lr": 1e-3}})
    return model_cfg, *build_model(model_cfg, runtime, train, 1e-3, 1e-4)


def _save_in_the_older_layout(root, runtime) -> dict[str, torch.Tensor]:
    """An MoE checkpoint (model and optimizer) written with the keys map of Megatron's own local spec, as this
    project wrote them before the layouts were joined; returns its pre-MLP norm weights."""
    from megatron.core.models.gpt import gpt_layer_specs as specs

    from factory.train import checkpoint as ckpt
    from factory.train.checkpoint_meta import CheckpointMeta

    model_cfg, model, ddp, optimizer = _training_parts(runtime)
    older = specs.get_gpt_layer_local_spec(num_experts=8, normalization="RMSNorm").submodules
    assert older.sharded_state_dict_keys_map["pre_mlp_layernorm."] == "mlp.linear_fc1.layer_norm_"
    norms = {}
    for i, layer in enumerate(model.decoder.layers):
        layer.submodules_config.sharded_state_dict_keys_map = older.sharded_state_dict_keys_map
        with torch.no_grad():
            layer.pre_mlp_layernorm.weight.copy_(torch.linspace(0.5, 1.5 + i, model_cfg.hidden_size))
        norms[f"decoder.layers.{i}.pre_mlp_layernorm.weight"] = layer.pre_mlp_layernorm.weight.detach().clone()
    optimizer.reload_model_params()
    _train_step(runtime, model, ddp, optimizer)  # Adam state to save
    ckpt.save(root, 5, model, model_cfg, runtime, optimizer=optimizer, meta=CheckpointMeta(stage="cpt"))
    return {name: model.state_dict()[name].clone() for name in norms}


def _train_step(runtime, model, ddp, optimizer) -> None:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from factory.train.step import make_forward_step

    tokens = torch.randint(0, 250, (2, 33), generator=torch.Generator().manual_seed(0))
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(2, 32),
             "position_ids": torch.arange(32).expand(2, 32)}
    with runtime.compute_context():
        get_forward_backward_func()(forward_step_func=make_forward_step(0.0, runtime.device),
                                    data_iterator=iter([batch]), model=[ddp], num_microbatches=1, seq_length=32,
                                    micro_batch_size=2, forward_only=False)
        optimizer.step()


def _stored_keys(path):
    from factory.train.checkpoint_keys import stored_keys

    return stored_keys(path)


def test_an_older_moe_checkpoint_still_loads_and_saves_in_the_joined_layout(tmp_path, runtime, caplog):
    from factory.train import checkpoint as ckpt
    from factory.train.checkpoint_stream import CheckpointReader

    norms = _save_in_the_older_layout(tmp_path / "old", runtime)
    old = ckpt.iteration_dir(tmp_path / "old", 5)
    assert OLD_NORM_KEY in _stored_keys(old) and NEW_NORM_KEY not in _stored_keys(old)

    model_cfg, model, _, optimizer = _training_parts(runtime)
    with caplog.at_level(logging.INFO, logger="factory.train.checkpoint_keys"):
        ckpt.load(old, model, runtime, optimizer=optimizer)  # model and optimizer state, as a resume does
    lines = [r.getMessage() for r in caplog.records if "older key" in r.getMessage()]
    assert len(lines) == 1 and str(old) in lines[0]
    assert all(torch.equal(model.state_dict()[name], value) for name, value in norms.items())
    moments = [optimizer.optimizer.state[p]["exp_avg"] for layer in model.decoder.layers
               for p in [layer.pre_mlp_layernorm.weight]]
    assert all(m.abs().sum() > 0 for m in moments)  # the norms' Adam state came back too
    reader = CheckpointReader(old, runtime)  # the streamed reader of upcycle, export and import
    assert all(torch.equal(reader.read([name])[name], value) for name, value in norms.items())

    saved = ckpt.save(tmp_path / "new", 6, model, model_cfg, runtime, optimizer=optimizer)
    assert NEW_NORM_KEY in _stored_keys(saved) and OLD_NORM_KEY not in _stored_keys(saved)


def test_extra_state_a_checkpoint_lacks_keeps_the_modules_own(tmp_path, runtime):
    """Transformer Engine's core attention has extra state (FP8 scaling, empty without FP8); local layers write none."""
    from megatron.core import dist_checkpointing
    from megatron.core.transformer.utils import make_sharded_object_for_checkpoint

    from factory.model.build import build_gpt_model
    from factory.train import checkpoint as ckpt
    from factory.train.checkpoint_keys import fit_to_checkpoint

    model_cfg = make_config(TINY_MOE).model
    path = ckpt.save(tmp_path, 1, build_gpt_model(model_cfg, runtime), model_cfg, runtime)
    model = build_gpt_model(model_cfg, runtime)
    own = torch.empty(0, dtype=torch.uint8)

    def with_te_extra_state():  # what TE's DotProductAttention adds to each layer's sharded state dict
        state = {"model": model.sharded_state_dict()}
        for i in range(model_cfg.num_layers):
            state["model"][f"decoder.layers.{i}.self_attention.core_attention._extra_state"] = \
                make_sharded_object_for_checkpoint(own, "decoder.layers.self_attention.core_attention._extra_state",
                                                   ((0, i, model_cfg.num_layers),))
        return state

    with pytest.raises(BaseException, match="core_attention._extra_state"):  # torch DCP: a BaseException
        dist_checkpointing.load(with_te_extra_state(), str(path))
    state = with_te_extra_state()
    fit_to_checkpoint(state, path)
    loaded = dist_checkpointing.load(state, str(path))
    assert loaded["model"]["decoder.layers.1.self_attention.core_attention._extra_state"] is own


_SAVE_ON_CPU = """
import sys
from factory.model.build import build_gpt_model
from factory.runtime.runtime import runtime_session
from factory.train import checkpoint as ckpt
from tests.conftest import TINY_MOE, make_config
cfg = make_config(TINY_MOE)
with runtime_session(cfg.runtime, cfg.parallel) as rt:
    ckpt.save(sys.argv[1], 1, build_gpt_model(cfg.model, rt), cfg.model, rt)
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device with Transformer Engine")
def test_transformer_engine_layers_load_a_cpu_written_moe_checkpoint(tmp_path):
    pytest.importorskip("transformer_engine")
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import runtime_session
    from factory.train import checkpoint as ckpt

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU process: local layers, as upcycle writes
    subprocess.run([sys.executable, "-c", _SAVE_ON_CPU, str(tmp_path / "cpu")], check=True, env=env)
    cfg = make_config(TINY_MOE, runtime={"device": "cuda", "transformer_engine": "required"})
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        model = build_gpt_model(cfg.model, rt)
        ckpt.load(tmp_path / "cpu", model, rt, restore_rng=False)
        tensors = {v.key for v in model.sharded_state_dict().values() if isinstance(v, ShardedTensor)}
        assert tensors <= _stored_keys(ckpt.resolve(tmp_path / "cpu"))
        assert NEW_NORM_KEY in tensors
