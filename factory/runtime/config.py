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


class Fp8Config(Section):
    """Transformer Engine FP8 training (runtime.precision=fp8): the scaling recipe and the layers kept in bf16."""

    recipe: Literal["current", "delayed"] = "current"
    """How each tensor's FP8 scale is chosen: current (from this step's amax, TE's per-tensor current scaling) or
    delayed (from an amax history of earlier steps, TE's DelayedScaling)."""
    format: Literal["hybrid", "e4m3"] = "hybrid"
    """hybrid: e4m3 forward, e5m2 gradients (what LLM-jp and Megatron-LM's recipes use); e4m3 for both."""
    bf16_layers: int = Field(default=1, ge=0)
    """Transformer layers kept in bf16 at each end of the model (the first and last N), as LLM-jp did; 0 for
    none. Megatron-Core 0.19.2 supports it with current scaling only."""
    amax_history: int = Field(default=1024, ge=1)
    """delayed only: steps of amax history the scale is taken from (their maximum)."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, self.recipe != "delayed" or self.bf16_layers == 0, f"{prefix}.bf16_layers", self.bf16_layers,
             f"Megatron-Core keeps layers in bf16 only under current scaling; set {prefix}.recipe=current or "
             f"{prefix}.bf16_layers=0")
        return out


class RuntimeConfig(Section):
    """Where and how processes run; the runtime module turns this into a device and dtype."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """cuda when available under auto."""
    precision: Literal["auto", "fp32", "bf16", "fp8"] = "auto"
    """Parameter/compute dtype; auto is bf16 on CUDA and fp32 on CPU (CPU bf16 matmuls are slow). fp8: bf16
    parameters with Transformer Engine FP8 GEMMs (`fp8` below); needs TE layers and an Ada/Hopper or newer GPU."""
    fp8: Fp8Config = Field(default_factory=Fp8Config)
    """The FP8 recipe; read only with precision fp8."""
    seed: int = 1234
    """Base seed for Python, NumPy, torch and Megatron's model-parallel RNG tracker."""
    deterministic: bool = False
    """Ask for deterministic kernels: torch's deterministic algorithms, and on CUDA a fixed cuBLAS workspace
    (CUBLAS_WORKSPACE_CONFIG), Megatron's deterministic mode and Transformer Engine's deterministic attention."""
    distributed_timeout_minutes: Annotated[int, OPERATIONAL] = Field(default=10, ge=1)
    """Collective timeout."""
    transformer_engine: Annotated[Literal["auto", "required", "disabled"], OPERATIONAL] = "auto"
    """Transformer Engine layers on CUDA: auto uses them where importable, required refuses to start without
    them (and memory plans count on their smaller saved activations), disabled builds Megatron's local layers.
    CPU runs never use them."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        if self.precision == "fp8":
            rule(out, self.device != "cpu", f"{prefix}.precision", self.precision,
                 "FP8 GEMMs need a CUDA device (runtime.device is cpu)")
            rule(out, self.transformer_engine != "disabled", f"{prefix}.precision", self.precision,
                 "FP8 runs through Transformer Engine layers; runtime.transformer_engine is disabled")
            out += self.fp8.problems(f"{prefix}.fp8")
        return out

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

    def planned_fp8(self) -> Fp8Config | None:
        """The FP8 recipe when this config trains in FP8, else None."""
        return self.fp8 if self.precision == "fp8" else None
