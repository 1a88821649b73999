"""Device memory: counting a run's peak allocation and host buffers for device copies (CUDA vs CPU)."""

from __future__ import annotations

import gc

import torch


def _counts(device: torch.device | None) -> bool:
    """Whether CUDA's allocator counts allocations on `device` (None: the current CUDA device, if any)."""
    return device.type == "cuda" if device is not None else torch.cuda.is_available()


def reset_peak_memory(device: torch.device | None = None) -> None:
    """Count peak allocated memory afresh from here on `device` (None: the current CUDA device, for a stage that
    runs in this process with a runtime of its own); nothing is counted on CPU. Unreachable tensors are collected
    first: Megatron's modules hold reference cycles, so an earlier model would otherwise still count."""
    if _counts(device):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | None = None) -> int | None:
    """The most bytes allocated on `device` (None: as `reset_peak_memory`) since the last reset; None on CPU,
    where nothing is counted."""
    return torch.cuda.max_memory_allocated(device) if _counts(device) else None


def host_buffer(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An empty host tensor to copy `device` tensors into: pinned for a CUDA device, so that a non_blocking copy
    runs asynchronously; plain memory for the CPU."""
    return torch.empty(shape, dtype=dtype, pin_memory=device.type == "cuda")
