"""Runtime and parallel-layout config sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from factory.schema import OPERATIONAL, Section, rule


class ParallelConfig(Section):
    """Model-parallel layout; data parallelism takes the remaining ranks."""

    tensor: int = Field(default=1, ge=1)
    """Tensor-parallel size (TP)."""
    pipeline: int = Field(default=1, ge=1)
    """Pipeline-parallel size (PP)."""
    context: int = Field(default=1, ge=1)
    """Context-parallel size (CP)."""
    expert: int = Field(default=1, ge=1)
    """Expert-parallel size (EP)."""
    expert_tensor: int | None = Field(default=None, ge=1)
    """Tensor-parallel size inside experts (ETP); defaults to `tensor`."""
    sequence_parallel: bool = False
    """Shard activations along the sequence in TP regions; needs tensor > 1."""

    @property
    def model_parallel_size(self) -> int:
        return self.tensor * self.pipeline * self.context

    @property
    def expert_tensor_size(self) -> int:
        return self.expert_tensor or self.tensor

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, not self.sequence_parallel or self.tensor > 1, f"{prefix}.sequence_parallel",
             self.sequence_parallel, "needs parallel.tensor > 1")
        return out

    def world_problems(self, world_size: int) -> list[str]:
        """Rules that need the launched world size."""
        out: list[str] = []
        rule(out, world_size % self.model_parallel_size == 0, "parallel", self.describe(),
             f"world size {world_size} must be divisible by tensor x pipeline x context "
             f"({self.model_parallel_size})")
        expert_mp = self.expert * self.expert_tensor_size * self.pipeline
        rule(out, world_size % expert_mp == 0, "parallel.expert", self.expert,
             f"world size {world_size} must be divisible by expert x expert_tensor x pipeline ({expert_mp})")
        return out

    def describe(self) -> str:
        return (f"TP{self.tensor}/PP{self.pipeline}/CP{self.context}/EP{self.expert}"
                f"/ETP{self.expert_tensor_size}")


class RuntimeConfig(Section):
    """Where and how processes run; the runtime module turns this into a device and dtype."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """cuda when available under auto."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Parameter/compute dtype; auto is bf16 on CUDA and fp32 on CPU (CPU bf16 matmuls are slow)."""
    seed: int = 1234
    """Base seed for Python, NumPy, torch and Megatron's model-parallel RNG tracker."""
    deterministic: bool = False
    """Ask torch for deterministic kernels."""
    distributed_timeout_minutes: Annotated[int, OPERATIONAL] = Field(default=10, ge=1)
    """Collective timeout."""
    transformer_engine: Annotated[Literal["auto", "required", "disabled"], OPERATIONAL] = "auto"
    """Transformer Engine layers on CUDA: auto uses them where importable, required refuses to start without
    them (and memory plans count on their smaller saved activations), disabled builds Megatron's local layers.
    CPU runs never use them."""

    def targets_gpu(self, gpu_launch: bool) -> bool:
        """Whether runs of this config go to GPUs, decided without probing this machine (plans, dry runs):
        device cuda, or auto under a launch that requests GPUs."""
        return self.device == "cuda" or (self.device == "auto" and gpu_launch)

    def planned_transformer_engine(self, on_gpu: bool) -> bool:
        """Whether runs of this config build TE layers, decided without a GPU: required, or auto where TE is
        importable on this machine (taken to share the job's environment, as a login node does)."""
        import importlib.util

        if not on_gpu or self.transformer_engine == "disabled":
            return False
        return self.transformer_engine == "required" or importlib.util.find_spec("transformer_engine") is not None

    def planned_precision(self, on_gpu: bool) -> str:
        """`precision`, with auto resolved as the runtime resolves it on that device."""
        return self.precision if self.precision != "auto" else ("bf16" if on_gpu else "fp32")
