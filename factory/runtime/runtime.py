"""Process setup: device, dtype, torch.distributed, Megatron parallel_state and seeds.

This module, compat.py, capabilities.py and memory.py are the only code that knows CPU from CUDA. Everything else
asks the `Runtime` object for a device, a dtype, TransformerConfig overrides or the layer-spec backend.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from factory.errors import ConfigError
from factory.runtime import capabilities, compat
from factory.runtime.capabilities import Capabilities
from factory.runtime.compat import ModelSection
from factory.runtime.config import Fp8Config, ParallelConfig, RuntimeConfig
from factory.schema import Section

log = logging.getLogger(__name__)


# Dense bf16 peak FLOP/s (no sparsity) by device-name substring, for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "B200": 2250e12}


@dataclass(frozen=True)
class Runtime:
    """What a process needs to know about where it runs."""

    device: torch.device
    dtype: torch.dtype
    rank: int
    local_rank: int
    world_size: int
    parallel: ParallelConfig
    transformer_engine: str = "auto"
    """RuntimeConfig.transformer_engine: auto, required or disabled."""
    precision: str = "fp32"
    """fp32, bf16 or fp8 (bf16 parameters and Transformer Engine FP8 GEMMs)."""
    fp8: Fp8Config | None = None
    """The FP8 recipe of an fp8 run."""
    deterministic: bool = False
    capabilities: Capabilities = capabilities.CPU
    """What this process's device and libraries can run (factory/model/execution.py decides from it)."""

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def device_name(self) -> str:
        """The accelerator's name (e.g. NVIDIA H100 80GB HBM3), or "cpu"."""
        return torch.cuda.get_device_name(self.device) if self.is_cuda else "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_parallel_size(self) -> int:
        return self.world_size // self.parallel.model_parallel_size

    @property
    def use_transformer_engine(self) -> bool:
        """Whether this process builds Transformer Engine layers (the TE layer spec)."""
        return self.capabilities.transformer_engine

    def synchronize(self) -> None:
        """Wait for queued device work (for timing); nothing to wait for on CPU."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def compute_context(self) -> contextlib.AbstractContextManager:
        """Context for megatron-core schedules, DDP and optimizer calls (CUDA scratch -> CPU on CPU)."""
        return contextlib.nullcontext() if self.is_cuda else compat.cuda_to_cpu()

    @property
    def supports_distributed_optimizer(self) -> bool:
        """Megatron's distributed optimizer shards state over DP ranks; its state does not reload on CPU."""
        return self.is_cuda

    def device_rng_state(self) -> dict:
        """This process's generator states (CPU, and the CUDA device's on GPUs) for checkpoints."""
        state = {"torch": torch.get_rng_state()}
        if self.is_cuda:
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_device_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if self.is_cuda and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def peak_flops(self) -> float | None:
        """Dense bf16 peak FLOP/s of this device for MFU, or None where unknown (CPU)."""
        if not self.is_cuda:
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)

    def transformer_config_overrides(self) -> dict:
        """TransformerConfig fields that depend on the device (dtypes, init placement, backend, determinism);
        the fusions are decided from `capabilities` by factory/model/execution.py."""
        from megatron.core.transformer.enums import AttnBackend

        dtype_flags = {"bf16": self.dtype == torch.bfloat16, "params_dtype": self.dtype,
                       "deterministic_mode": self.deterministic}
        if self.is_cuda:
            backend = AttnBackend.auto if self.use_transformer_engine else AttnBackend.local
            return {**dtype_flags, "attention_backend": backend}
        return {**dtype_flags, **compat.CPU_TRANSFORMER_OVERRIDES, "attention_backend": AttnBackend.local}

    def runnable(self, model_cfg: ModelSection) -> ModelSection:
        """`model_cfg` as this device can build it with the same parameters (checkpoint tools: they only
        read, write and probe weights, so the CUDA-only MoE dispatch and GEMM settings do not matter)."""
        return model_cfg if self.is_cuda else compat.cpu_equivalent(model_cfg)

    def check_model(self, model_cfg: Section) -> None:
        """Reject model settings this device cannot run, before anything is built."""
        problems = [] if self.is_cuda else compat.unsupported_on_cpu(model_cfg)
        if problems:
            raise ConfigError(problems)


def cuda_device_count() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_description() -> str | None:
    """The first CUDA device for a report: name, compute capability and CUDA version; None without CUDA."""
    if not cuda_device_count():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)} (sm_{major}{minor}), CUDA {torch.version.cuda}"


def resolve_device(cfg: RuntimeConfig) -> torch.device:
    has_cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_cuda:
        raise ConfigError("runtime.device=cuda: no CUDA device is visible in this process")
    if cfg.device == "cuda" or (cfg.device == "auto" and has_cuda):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_precision(cfg: RuntimeConfig, device: torch.device) -> str:
    """fp32, bf16 or fp8: `runtime.precision` with auto resolved for `device`."""
    return cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")


def resolve_dtype(cfg: RuntimeConfig, device: torch.device) -> torch.dtype:
    """The parameter dtype (an FP8 run keeps bf16 parameters)."""
    return torch.float32 if resolve_precision(cfg, device) == "fp32" else torch.bfloat16


DETERMINISTIC_CUDA_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "NVTE_ALLOW_NONDETERMINISTIC_ALGO": "0"}
"""cuBLAS refuses deterministic mode without a fixed workspace (torch raises at the first matmul); TE picks
deterministic attention kernels, which Megatron's deterministic_mode asserts."""


def _deterministic(device: torch.device) -> None:
    """torch's deterministic algorithms for this session (on CUDA with what cuBLAS and TE need first). On CUDA an
    op without a deterministic kernel warns instead of raising, so a run is never stopped by one."""
    if device.type == "cuda":
        for key, value in DETERMINISTIC_CUDA_ENV.items():
            os.environ.setdefault(key, value)
    if not _DETERMINISM_BEFORE:
        _DETERMINISM_BEFORE.append(torch.are_deterministic_algorithms_enabled())
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")


def check_fp8(cfg: RuntimeConfig, caps: Capabilities) -> None:
    """An FP8 run needs Transformer Engine layers and FP8 tensor cores; one line before anything starts."""
    if cfg.precision != "fp8":
        return
    if not caps.transformer_engine:
        raise ConfigError("runtime.precision=fp8: needs Transformer Engine layers; this process builds none "
                          f"({caps.describe()})")
    if not caps.fp8_tensor_cores:
        raise ConfigError(f"runtime.precision=fp8: {caps.device_name} has no FP8 tensor cores (compute "
                          "capability 8.9 or newer: Ada, Hopper, Blackwell)")


def seed_everything(seed: int, rank_offset: int = 0) -> None:
    """Seed Python, NumPy and torch; Megatron's tracker is seeded once parallel_state exists."""
    random.seed(seed + rank_offset)
    np.random.seed((seed + rank_offset) % 2**32)
    torch.manual_seed(seed)


def _init_process_group(device: torch.device, cfg: RuntimeConfig) -> tuple[int, int, int]:
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), torch.distributed.get_world_size()
    env = os.environ
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(minutes=cfg.distributed_timeout_minutes)
    if "RANK" not in env:  # a plain single process: a world of one, for the life of the session only
        # The store binds a port the system picks (0): no window in which another process can take it.
        store = torch.distributed.TCPStore("127.0.0.1", 0, 1, True, timeout=timeout)
        one = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "RANK": "0", "WORLD_SIZE": "1",
               "LOCAL_RANK": "0"}
        _SESSION_ENV.update({k: v for k, v in one.items() if k not in env})
        env.update(_SESSION_ENV)
        torch.distributed.init_process_group(backend=backend, store=store, rank=0, world_size=1, timeout=timeout)
        return 0, 0, 1
    torch.distributed.init_process_group(backend=backend, timeout=timeout)
    return int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"])


_SESSION_ENV: dict[str, str] = {}
"""torch.distributed variables a single-process session set, removed again at its shutdown."""
_DETERMINISM_BEFORE: list[bool] = []
"""Whether torch's deterministic algorithms were on before a session turned them on (restored at shutdown)."""


def transformer_engine_layers(setting: str, on_cuda: bool) -> bool:
    """RuntimeConfig.transformer_engine on this process: TE layers on CUDA when importable, unless disabled;
    required without TE is a config error."""
    if not on_cuda or setting == "disabled":
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        if setting == "required":
            raise ConfigError("runtime.transformer_engine=required: transformer_engine is not importable on this "
                              "node (FACTORY_GPU=1 bash scripts/setup.sh installs it)") from None
        return False
    return True


def init_runtime(cfg: RuntimeConfig, parallel: ParallelConfig) -> Runtime:
    """Start torch.distributed (torchrun env or a world of one) and Megatron's parallel_state."""
    from megatron.core import parallel_state, tensor_parallel

    device = resolve_device(cfg)
    if device.type == "cpu":
        compat.apply_cpu_compat()
    compat.reset_megatron_globals()
    world = int(os.environ.get("WORLD_SIZE", 1))
    problems = parallel.world_problems(world)
    if problems:
        raise ConfigError(problems)
    engine = transformer_engine_layers(cfg.transformer_engine, device.type == "cuda")  # refused before any init
    caps = capabilities.probe(device, engine)
    check_fp8(cfg, caps)
    if cfg.deterministic:
        _deterministic(device)
    rank, local_rank, world = _init_process_group(device, cfg)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=parallel.tensor,
            pipeline_model_parallel_size=parallel.pipeline,
            context_parallel_size=parallel.context,
            expert_model_parallel_size=parallel.expert,
            expert_tensor_parallel_size=parallel.expert_tensor_size,
        )
    seed_everything(cfg.seed, rank_offset=rank)
    tensor_parallel.model_parallel_cuda_manual_seed(cfg.seed, force_reset_rng=True)
    precision = resolve_precision(cfg, device)
    runtime = Runtime(device=device, dtype=resolve_dtype(cfg, device), rank=rank, local_rank=local_rank,
                      world_size=world, parallel=parallel, transformer_engine=cfg.transformer_engine,
                      precision=precision, fp8=cfg.fp8 if precision == "fp8" else None,
                      deterministic=cfg.deterministic, capabilities=caps)
    log.info("runtime: %s %s, world %d, %s, %s", device, precision, world, parallel.describe(), caps.describe())
    return runtime


def release_parallel_state() -> None:
    """Tear down Megatron's parallel_state with the process groups it made; the default group stays.
    destroy_model_parallel only drops Megatron's references, and every gloo group left alive keeps threads polling
    its sockets: a process that builds layout after layout (a kept process group) slowed down as they piled up."""
    from megatron.core import parallel_state
    from torch.distributed import distributed_c10d

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        default = distributed_c10d._get_default_group()
        for group in list(distributed_c10d._world.pg_map):  # torch lists its live groups nowhere public
            if group is not default:
                torch.distributed.destroy_process_group(group)


def shutdown_runtime() -> None:
    """Tear down parallel_state and the process group; clears Megatron's global leftovers."""
    release_parallel_state()
    if _DETERMINISM_BEFORE:  # a later session in this process decides for itself
        torch.use_deterministic_algorithms(_DETERMINISM_BEFORE.pop())
    compat.reset_megatron_globals()
    if _KEPT_GROUP:  # kept_process_group ends it
        return
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in _SESSION_ENV:  # what a later process started from this one must not inherit
        os.environ.pop(key, None)
    _SESSION_ENV.clear()


_KEPT_GROUP: list[bool] = []
"""Holds True while `kept_process_group` keeps torch.distributed up across runtime sessions."""


@contextlib.contextmanager
def kept_process_group(cfg: RuntimeConfig) -> Iterator[None]:
    """One process group for several runtime sessions in this process (stages run one after another in one
    torchrun launch): the sessions inside leave it up and it ends here. torch cannot start the default group twice
    in one launch: the second finds the first one's addresses in torchrun's store and times out connecting."""
    _init_process_group(resolve_device(cfg), cfg)
    _KEPT_GROUP.append(True)
    try:
        yield
    finally:
        _KEPT_GROUP.clear()
        shutdown_runtime()


@contextlib.contextmanager
def runtime_session(cfg: RuntimeConfig, parallel: ParallelConfig) -> Iterator[Runtime]:
    """`init_runtime` ... `shutdown_runtime` as a context manager."""
    runtime = init_runtime(cfg, parallel)
    try:
        yield runtime
    finally:
        shutdown_runtime()
