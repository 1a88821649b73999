"""One test per CPU compatibility item of factory.runtime.compat (these run only without CUDA)."""

import os

import pytest
import torch

from factory.errors import ConfigError
from factory.model.build import build_gpt_model
from factory.runtime import compat
from tests.conftest import TINY_DENSE, TINY_MOE, make_config

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU compatibility only applies without CUDA")


def test_apply_is_idempotent():
    compat.apply_cpu_compat()
    patched = torch.cuda.current_device
    compat.apply_cpu_compat()
    assert torch.cuda.current_device is patched


def test_item1_rope_buffers_live_on_cpu(runtime):
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    rope = RotaryEmbedding(kv_channels=16, rotary_percent=1.0)  # no use_cpu_initialization
    emb = rope(8)
    assert emb.device.type == "cpu" and emb.shape == (8, 1, 1, 16)


def test_item2_default_causal_mask_on_cpu():
    compat.apply_cpu_compat()
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils

    for mask_fn in (utils.get_default_causal_mask, fused_softmax.get_default_causal_mask):
        mask = mask_fn(4)
        assert mask.device.type == "cpu" and mask.dtype == torch.bool
        assert torch.equal(mask, torch.ones(4, 4).triu(1).bool())


def test_item3_rng_tracker_forks_cpu_generator(runtime):
    from megatron.core import tensor_parallel

    tracker = tensor_parallel.get_cuda_rng_tracker()
    before = torch.get_rng_state()
    with tracker.fork():
        a = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)  # default stream untouched
    with tracker.fork():
        b = torch.rand(4)
    assert not torch.equal(a, b)  # the forked stream advances
    tensor_parallel.model_parallel_cuda_manual_seed(1234, force_reset_rng=True)
    with tensor_parallel.get_cuda_rng_tracker().fork():
        c = torch.rand(4)
    assert torch.equal(a, c)  # reseeding reproduces the stream


def test_item3_dropout_model_is_reproducible(runtime):
    from megatron.core import tensor_parallel

    cfg = make_config(TINY_DENSE, model={"attention_dropout": 0.1, "hidden_dropout": 0.1})
    model = build_gpt_model(cfg.model, runtime).train()
    tokens = torch.arange(64).view(2, 32) % 250
    pos = torch.arange(32).expand(2, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        tensor_parallel.model_parallel_cuda_manual_seed(7, force_reset_rng=True)
        outs.append(model(tokens, pos, None))
    assert torch.equal(outs[0], outs[1])


def test_item4_alltoall_dispatcher_rejected_with_one_line(runtime):
    cfg = make_config(TINY_MOE, model={})
    cfg.model.moe.token_dispatcher = "alltoall"
    with pytest.raises(ConfigError) as err:
        build_gpt_model(cfg.model, runtime)
    assert err.value.problems == ["model.moe.token_dispatcher=alltoall: needs CUDA streams; use allgather on CPU"]


def test_item5_checkpoint_sync_is_noop_and_dist_checkpoint_roundtrips(runtime, tmp_path):
    from megatron.core import dist_checkpointing

    from factory.train import checkpoint_writer

    torch.cuda.synchronize()  # would raise on a CPU-only build without the patch
    cfg = make_config(TINY_DENSE)
    model = build_gpt_model(cfg.model, runtime)
    tokens, pos = torch.arange(32).view(1, 32), torch.arange(32).view(1, 32)
    ref = model(tokens, pos, None)
    checkpoint_writer.prepare()  # as the factory's saves: no multiprocessing manager (a fresh interpreter)
    dist_checkpointing.save(model.sharded_state_dict(), str(tmp_path))
    torch.manual_seed(99)
    other = build_gpt_model(cfg.model, runtime)
    assert not torch.equal(other(tokens, pos, None), ref)
    other.load_state_dict(dist_checkpointing.load(other.sharded_state_dict(), str(tmp_path)))
    assert torch.equal(other(tokens, pos, None), ref)


def test_item6_cuda_fusions_are_off_on_cpu(runtime):
    """The execution decision on a CPU runtime: every CUDA kernel off, parameters initialized on the CPU."""
    from factory.model.build import transformer_config

    config = transformer_config(make_config(TINY_MOE).model, runtime)
    for flag in ("gradient_accumulation_fusion", "apply_rope_fusion", "bias_activation_fusion", "bias_dropout_fusion",
                 "cross_entropy_loss_fusion", "moe_permute_fusion", "moe_router_fusion", "persist_layer_norm",
                 "memory_efficient_layer_norm", "masked_softmax_fusion"):
        assert getattr(config, flag) is False, flag
    assert config.params_dtype == torch.float32 and config.use_cpu_initialization


def test_item7_reset_clears_leaked_globals(runtime):
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    cfg = make_config(TINY_MOE)
    model = build_gpt_model(cfg.model, runtime)
    model(torch.arange(32).view(1, 32), torch.arange(32).view(1, 32), None)
    assert os.environ.get("NVTE_FLASH_ATTN") == "0"
    compat.reset_megatron_globals()
    assert not any(k in os.environ for k in ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN"))
    assert not get_moe_metrics_tracker().metrics
