"""Device memory: peak counting (None on CPU, bytes on CUDA) and host buffers (pinned only for CUDA copies)."""

import pytest
import torch

from factory.runtime.memory import host_buffer, peak_memory, reset_peak_memory

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_nothing_is_counted_for_a_cpu_device():
    reset_peak_memory(CPU)  # on a torch without CUDA, a call into torch.cuda would raise here
    torch.ones(1024, 1024)
    assert peak_memory(CPU) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a process without CUDA")
def test_without_cuda_the_current_device_counts_nothing():
    reset_peak_memory()
    assert peak_memory() is None


def test_a_host_buffer_for_a_cpu_device_is_plain_memory():
    buffer = host_buffer(torch.Size([3, 5]), torch.bfloat16, CPU)
    assert buffer.device == CPU and buffer.shape == (3, 5) and buffer.dtype == torch.bfloat16
    assert not buffer.is_pinned()


@needs_cuda
def test_the_peak_counts_what_was_allocated_since_the_reset():
    device = torch.device("cuda", torch.cuda.current_device())
    reset_peak_memory(device)
    before = peak_memory(device)
    held = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)
    assert peak_memory(device) >= before + held.numel()
    assert peak_memory() == peak_memory(device)  # None: the current CUDA device
    del held
    reset_peak_memory(device)
    assert peak_memory(device) == before


@needs_cuda
def test_a_host_buffer_for_a_cuda_device_is_pinned():
    buffer = host_buffer(torch.Size([4]), torch.float32, torch.device("cuda", torch.cuda.current_device()))
    assert buffer.device == CPU and buffer.is_pinned()
