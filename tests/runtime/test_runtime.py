"""Runtime setup: device and dtype resolution, world-size checks, parallel_state and seeding."""

import importlib.util
import os

import pytest
import torch

from factory.errors import ConfigError
from factory.runtime.config import RuntimeConfig
from factory.runtime.runtime import (device_description, init_runtime, kept_process_group, resolve_device,
                                    resolve_dtype, runtime_session, shutdown_runtime, transformer_engine_layers)
from tests.conftest import TINY_DENSE, make_config

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


@cpu_only
def test_auto_resolves_to_cpu_fp32():
    cfg = RuntimeConfig()
    device = resolve_device(cfg)
    assert device.type == "cpu" and resolve_dtype(cfg, device) == torch.float32
    assert resolve_dtype(RuntimeConfig(precision="bf16"), device) == torch.bfloat16


@cpu_only
def test_cuda_requested_without_cuda_is_one_line():
    with pytest.raises(ConfigError) as err:
        resolve_device(RuntimeConfig(device="cuda"))
    assert err.value.problems == ["runtime.device=cuda: no CUDA device is visible in this process"]


@cpu_only
def test_without_cuda_there_is_no_device_to_describe():
    assert device_description() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_device_is_described_by_name_compute_capability_and_cuda_version():
    major, minor = torch.cuda.get_device_capability(0)
    assert device_description() == (f"{torch.cuda.get_device_name(0)} (sm_{major}{minor}), "
                                    f"CUDA {torch.version.cuda}")


def test_transformer_engine_required_without_it_is_one_line():
    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("transformer_engine is installed here")
    assert transformer_engine_layers("auto", on_cuda=True) is False
    assert transformer_engine_layers("required", on_cuda=False) is False  # CPU runs never use TE
    with pytest.raises(ConfigError) as err:
        transformer_engine_layers("required", on_cuda=True)
    assert err.value.problems[0].startswith("runtime.transformer_engine=required: transformer_engine is not")


def test_world_too_small_for_layout_fails_before_init():
    cfg = make_config(TINY_DENSE, parallel={"tensor": 2})
    with pytest.raises(ConfigError) as err:
        init_runtime(cfg.runtime, cfg.parallel)
    assert "world size 1 must be divisible by tensor x pipeline x context (2)" in err.value.problems[0]
    assert not torch.distributed.is_initialized()


def test_world_of_one_initializes_parallel_state_and_tears_down():
    from megatron.core import parallel_state

    cfg = make_config(TINY_DENSE)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        assert rt.world_size == 1 and rt.rank == 0 and rt.is_main and rt.data_parallel_size == 1
        assert parallel_state.get_tensor_model_parallel_world_size() == 1
        assert torch.distributed.get_backend() == ("nccl" if rt.is_cuda else "gloo")
    assert not torch.distributed.is_initialized()
    assert not parallel_state.model_parallel_is_initialized()


def test_seed_makes_init_reproducible():
    from factory.model.build import build_gpt_model

    cfg = make_config(TINY_DENSE)
    weights = []
    for _ in range(2):
        with runtime_session(cfg.runtime, cfg.parallel) as rt:
            weights.append(build_gpt_model(cfg.model, rt).state_dict()["decoder.layers.0.mlp.linear_fc1.weight"])
    assert torch.equal(weights[0], weights[1])
    shutdown_runtime()  # a second shutdown is harmless


def test_a_kept_process_group_outlives_the_sessions_inside_it_and_ends_with_it():
    """Stages run one after another in one torchrun launch share one group (torch cannot start it twice there)."""
    from megatron.core import parallel_state

    cfg = make_config(TINY_DENSE)
    with kept_process_group(cfg.runtime):
        group = torch.distributed.group.WORLD
        for _ in range(2):
            with runtime_session(cfg.runtime, cfg.parallel) as rt:
                assert rt.world_size == 1 and parallel_state.model_parallel_is_initialized()
            assert torch.distributed.is_initialized() and torch.distributed.group.WORLD is group
            assert not parallel_state.model_parallel_is_initialized()
    assert not torch.distributed.is_initialized() and "MASTER_PORT" not in os.environ
    with runtime_session(cfg.runtime, cfg.parallel):  # a later session owns its group again
        pass
    assert not torch.distributed.is_initialized()
