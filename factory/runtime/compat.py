"""Megatron-Core on a machine without CUDA: the few patches it needs, applied once.

megatron-core 0.19.2 assumes CUDA in a handful of places that no config flag avoids (measured on a
2-core CPU box, see docs/runtime.md). `apply_cpu_compat()` patches exactly those, is idempotent, and
is only ever called by the runtime when CUDA is absent. Each item has a test in tests/runtime.

1. Device queries: RoPE (and other constructors) place buffers on `torch.cuda.current_device()`.
   Without CUDA that call now answers "cpu".
2. Causal mask: `get_default_causal_mask` builds its mask with device="cuda"; rebuilt on CPU.
3. RNG tracker: Megatron's model-parallel RNG tracker forks the CUDA generator; on CPU it forks the
   CPU generator instead, so dropout in TP regions stays reproducible and per-rank.
4. alltoall token dispatcher: uses CUDA streams; `unsupported_on_cpu()` rejects it up front
   (allgather runs) instead of failing mid-forward. (A grouped-GEMM request falls back to one GEMM per expert
   with a warning, on CPU as on a GPU without Transformer Engine: factory/model/execution.py.)
5. Checkpoint writers call `torch.cuda.synchronize()`; with no device work queued it is a no-op.
6. Fusions: the execution decision (factory/model/execution.py) turns every CUDA kernel off for a CPU run;
   parameters are initialized on the CPU (`CPU_TRANSFORMER_OVERRIDES`).
7. Global state that leaks between models in one process (NVTE_* attention env vars written by
   GPTModel, the MoE metrics tracker holding dead process groups, the MoE aux-loss gradient scale
   kept on a class): `reset_megatron_globals()`.
8. Training: Megatron's schedules, DDP buffers and optimizer allocate scratch tensors with
   `device="cuda"` (loss/token counters, norms), and its fully parallel checkpoint load moves the shards
   ranks exchange with `.cuda()`. `cuda_to_cpu()` is a torch function mode that sends those allocations
   to the CPU and leaves those tensors where they are; the runtime enters it around training steps and
   checkpoint loads. DDP's grad sync waits on `torch.cuda.current_stream()`: a stream that never has
   pending work stands in for it.
9. `clip_grad_by_total_norm_fp32` asserts CUDA gradients; on CPU the same in-place scaling runs
   without the assert.

Why the patches are process-wide and never undone, rather than scoped to a runtime session: every
patched function, left as it is, can only raise in a process without CUDA ("Torch not compiled with
CUDA"), so a patch never changes a call that worked before it; megatron-core looks these functions up
at call time from objects that outlive a session (models, optimizers, the RNG tracker instance, the
dist_checkpointing writers a stage keeps between saves), so undoing them at the end of a session would
turn those objects' next call into a crash; and applying them once per process keeps the pipeline's
and the tests' many sessions in one interpreter identical. They are never applied where CUDA exists.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, TypeVar

import torch

from factory.schema import Section

_APPLIED = False
_NVTE_ENV = ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN")

# TransformerConfig fields a CPU run needs beyond the execution decision (which turns every fusion off there).
CPU_TRANSFORMER_OVERRIDES = {"use_cpu_initialization": True}

ModelSection = TypeVar("ModelSection", bound=Section)
"""A `model` section: factory/model/config.py's ModelConfig, which this package cannot import (the model package
builds on the runtime); `cpu_equivalent` returns the type it is given."""


def apply_cpu_compat() -> None:
    """Patch megatron-core for a process without CUDA. Safe to call any number of times."""
    global _APPLIED
    if _APPLIED:
        return
    if torch.cuda.is_available():
        raise RuntimeError("apply_cpu_compat() is for processes without CUDA")
    torch.cuda.current_device = _cpu_device
    torch.cuda.synchronize = _no_sync
    torch.cuda.current_stream = _idle_stream
    _patch_causal_mask()
    _patch_rng_tracker()
    _patch_grad_clipping()
    _APPLIED = True


def _cpu_device() -> str:
    return "cpu"


def _no_sync(device=None) -> None:
    return None


class _IdleStream:
    """A stream with no pending work: waiting on it returns at once."""

    def wait_event(self, event: torch.cuda.Event) -> None:
        return None

    def wait_stream(self, stream: torch.cuda.Stream) -> None:
        return None


def _idle_stream(device=None) -> _IdleStream:
    return _IdleStream()


class _CudaToCpu(torch.overrides.TorchFunctionMode):
    """Rewrites `device="cuda"` arguments of torch calls to the CPU, and `tensor.cuda()` to the tensor itself."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:  # the shards a fully parallel checkpoint load exchanges
            return args[0]
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def cuda_to_cpu() -> contextlib.AbstractContextManager:
    """Context in which megatron-core's hard-coded CUDA scratch allocations land on the CPU."""
    return _CudaToCpu()


def _clip_grads_by_total_norm(parameters, max_norm, total_norm, use_decoupled_grad=False) -> None:
    """Megatron's gradient scaling for clipping, without its CUDA-only assert."""
    coeff = max_norm / (total_norm + 1.0e-6)
    if coeff >= 1.0:
        return
    for param in parameters:
        grad = getattr(param, "decoupled_grad", None) if use_decoupled_grad else param.grad
        if grad is not None:
            grad.detach().mul_(coeff)


def _patch_grad_clipping() -> None:
    from megatron.core.optimizer import clip_grads, optimizer

    clip_grads.clip_grad_by_total_norm_fp32 = _clip_grads_by_total_norm
    optimizer.clip_grad_by_total_norm_fp32 = _clip_grads_by_total_norm


def _cpu_causal_mask(sq: int) -> torch.Tensor:
    """Upper-triangular bool mask (True = masked), as Megatron's, on the CPU."""
    return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)


def _patch_causal_mask() -> None:
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils

    utils.get_default_causal_mask = _cpu_causal_mask
    fused_softmax.get_default_causal_mask = _cpu_causal_mask


def _patch_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    class CpuRNGStatesTracker(mrandom.CudaRNGStatesTracker):
        """Megatron's named RNG states, kept for the CPU generator."""

        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            self.seeds_.add(seed)
            orig = torch.get_rng_state()
            torch.manual_seed(seed)
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(orig)

        @contextlib.contextmanager
        def fork(self, name: str = mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME) -> Iterator[None]:
            if name not in self.states_:
                raise Exception(f"rng state {name} is not added")
            orig = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(orig)

    mrandom.CudaRNGStatesTracker = CpuRNGStatesTracker
    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    mrandom.initialize_rng_tracker(force_reset=True)


def unsupported_on_cpu(model_cfg: Section) -> list[str]:
    """Model settings that megatron-core cannot run without CUDA, one line each."""
    out = []
    moe = getattr(model_cfg, "moe", None)
    if moe is not None and moe.token_dispatcher == "alltoall":
        out.append("model.moe.token_dispatcher=alltoall: needs CUDA streams; use allgather on CPU")
    return out


def cpu_equivalent(model_cfg: ModelSection) -> ModelSection:
    """The same parameters and function with the CUDA-only MoE settings swapped for what runs in one
    CPU process (allgather dispatch, one GEMM per expert): the checkpoint layout does not change."""
    moe = getattr(model_cfg, "moe", None)
    if moe is None or (moe.token_dispatcher != "alltoall" and not moe.grouped_gemm):
        return model_cfg
    return model_cfg.model_copy(update={"moe": moe.model_copy(update={"token_dispatcher": "allgather",
                                                                      "grouped_gemm": False})})


def reset_megatron_globals() -> None:
    """Clear process-global state megatron-core leaves behind after building/running a model."""
    from megatron.core.transformer.moe import moe_logging
    from megatron.core.transformer.moe.moe_utils import MoEAuxLossAutoScaler

    for key in _NVTE_ENV:
        os.environ.pop(key, None)
    # A fresh tracker: the old one's entries hold process groups that die with parallel_state.
    moe_logging.set_moe_metrics_tracker(moe_logging.MoEMetricsTracker())
    # The aux-loss gradient scale is a class attribute: a later model must not inherit its shape.
    MoEAuxLossAutoScaler.main_loss_backward_scale = None
