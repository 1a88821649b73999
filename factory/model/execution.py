"""How a model runs, decided once before it is built: precision, every Megatron fusion, FP8, the experts' kernel
and data-parallel overlap.

`decide` is a pure function of the runtime's capabilities (factory/runtime/capabilities.py), the model, the
parallel layout, the precision and what the code driving the model does (`Execution`). The model builder turns
the decision into TransformerConfig fields, the training setup into its DDP config, and the memory plan and the
dry run read the same decision, so what is planned is what runs. Each fusion is on where its kernel exists and
says why where it is off; megatron-core 0.19.2 defaults every one of them to off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from factory.model.config import ModelConfig
from factory.runtime.capabilities import Capabilities
from factory.runtime.config import Fp8Config, ParallelConfig

if TYPE_CHECKING:  # for annotations only
    from factory.runtime.runtime import Runtime

RECOMPUTE_FIELDS = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
}


@dataclass(frozen=True)
class Overlap:
    """Data-parallel communication the training asks for; None leaves the choice to the decision."""

    grad_reduce: bool | None = None
    param_gather: bool | None = None
    bucket_size: int | None = None


@dataclass(frozen=True)
class Execution:
    """What the code that drives a model decides about how it runs; the defaults suit inference and tools."""

    recompute: Literal["none", "selective", "full"] = "none"
    """Activation recomputation: none, selective (core attention) or full (every layer)."""
    per_token_loss: bool = False
    """The loss is a per-token sum that Megatron's schedule divides by the global token count
    (`calculate_per_token_loss`); the MoE router then scales its aux and z losses to match."""
    model_loss: bool = True
    """GPTModel computes the cross-entropy from labels; False when the step computes its own loss from the
    logits (z-loss), where the fused cross-entropy is not on the path."""
    distributed_optimizer: bool = False
    """The training asks for Megatron's distributed optimizer (granted where the runtime supports it)."""
    overlap: Overlap = field(default_factory=Overlap)


@dataclass(frozen=True)
class Fusion:
    name: str
    field: str
    """The TransformerConfig field that turns it on."""
    on: bool
    why: str = ""
    """Why it is off."""


@dataclass(frozen=True)
class Decision:
    """Every choice about how the model runs; `fields()` is its TransformerConfig part."""

    capabilities: Capabilities
    precision: str
    """fp32, bf16 or fp8 (bf16 parameters, FP8 GEMMs)."""
    fusions: tuple[Fusion, ...]
    fp8: Fp8Config | None
    fp8_layers: int
    """Transformer layers whose GEMMs run in FP8 (the rest of an FP8 run stays in bf16)."""
    grouped_gemm: bool
    """The experts run as one grouped GEMM (TEGroupedMLP); False: one GEMM per expert (SequentialMLP)."""
    distributed_optimizer: bool
    overlap_grad_reduce: bool
    overlap_param_gather: bool
    bucket_size: int | None
    overlap_why: str = ""
    """Why gradient reduction is not overlapped."""
    warnings: tuple[str, ...] = ()
    """Requests that could not be met and what runs instead (each logged once where the model is built)."""

    def fused(self, name: str) -> bool:
        return any(f.name == name and f.on for f in self.fusions)

    def fields(self) -> dict:
        """TransformerConfig fields of this decision (precision dtypes and the attention backend come from the
        runtime, recomputation and the loss convention from the Execution)."""
        out = {f.field: f.on for f in self.fusions}
        if "cross_entropy_loss_fusion" in out:
            out["cross_entropy_fusion_impl"] = "native"  # Megatron's own kernel; "te" needs a newer TE
        if self.fp8 is not None:
            out.update(fp8=self.fp8.format, fp8_recipe="tensorwise" if self.fp8.recipe == "current" else "delayed",
                       first_last_layers_bf16=self.fp8.bf16_layers > 0,
                       num_layers_at_start_in_bf16=self.fp8.bf16_layers, num_layers_at_end_in_bf16=self.fp8.bf16_layers)
            if self.fp8.recipe == "delayed":
                out.update(fp8_amax_history_len=self.fp8.amax_history, fp8_amax_compute_algo="max")
        return out

    def ddp_fields(self) -> dict:
        """DistributedDataParallelConfig fields."""
        return {"grad_reduce_in_fp32": True, "use_distributed_optimizer": self.distributed_optimizer,
                "overlap_grad_reduce": self.overlap_grad_reduce, "overlap_param_gather": self.overlap_param_gather,
                "bucket_size": self.bucket_size}

    def describe_fusions(self) -> str:
        on = [f.name for f in self.fusions if f.on]
        off = [f"{f.name} ({f.why})" for f in self.fusions if not f.on]
        return f"fusions: {', '.join(on) or 'none'}" + (f"; off: {', '.join(off)}" if off else "")

    def describe_precision(self) -> str:
        if self.fp8 is None:
            return f"precision: {self.precision}"
        recipe = f"{self.fp8.recipe} scaling" + (f", amax history {self.fp8.amax_history}"
                                                  if self.fp8.recipe == "delayed" else "")
        return (f"precision: fp8 ({self.fp8.format}, {recipe}; {self.fp8_layers} FP8 layers, first and last "
                f"{self.fp8.bf16_layers} in bf16)")

    def describe_overlap(self) -> str:
        if not self.overlap_grad_reduce:
            return f"data-parallel overlap: off ({self.overlap_why})"
        bucket = f"{self.bucket_size:,} elements" if self.bucket_size else "Megatron's max(40M, 1M x DP) elements"
        gather = "on" if self.overlap_param_gather else "off"
        return (f"data-parallel overlap: grad reduce on, param gather {gather} "
                f"({'distributed' if self.distributed_optimizer else 'plain'} optimizer), bucket {bucket}")


def _fusion_table(caps: Capabilities, model: ModelConfig, parallel: ParallelConfig, precision: str,
                  execution: Execution) -> list[Fusion]:
    """(name, field, why it is off or None) for each fusion that applies to this model and layout."""
    cpu = None if caps.cuda else "CPU run"
    te = "needs Transformer Engine layers"
    cross_entropy = ("the z-loss step computes the loss from the logits" if not execution.model_loss else
                     "an fp32 run: Megatron's fused kernel returns bf16 logit gradients" if precision == "fp32" else None)
    rows = [
        ("swiglu", "bias_activation_fusion", cpu),  # Megatron's fused SwiGLU: recomputed in backward
        ("bias-dropout-add", "bias_dropout_fusion", cpu),
        ("rope", "apply_rope_fusion", cpu or (None if caps.te_at_least(1, 4) else f"{te} >= 1.4")),
        ("grad-accum", "gradient_accumulation_fusion",
         cpu or (None if caps.apex_grad_accumulation else "no Apex fused_weight_gradient_mlp_cuda")),
        ("cross-entropy", "cross_entropy_loss_fusion", cpu or cross_entropy),
    ]
    if model.moe is not None:
        rows += [("moe-permute", "moe_permute_fusion", cpu or (None if caps.te_at_least(2, 1) else f"{te} >= 2.1")),
                 ("moe-router", "moe_router_fusion", cpu or (None if caps.te_at_least(2, 7) else f"{te} >= 2.7"))]
    if parallel.pipeline > 1:  # the schedule frees each sent stage output (works on any device)
        rows.append(("pipeline-dealloc", "deallocate_pipeline_outputs", None))
    return [Fusion(name, field_name, why is None, why or "") for name, field_name, why in rows]


def grouped_gemm_fallback(caps: Capabilities, model: ModelConfig) -> str | None:
    """The warning when model.moe.grouped_gemm asks for a kernel this runtime lacks; None when it runs or is not
    asked for."""
    if model.moe is None or not model.moe.grouped_gemm or caps.te_at_least(1, 9):
        return None
    why = "a CPU run" if not caps.cuda else "it needs Transformer Engine >= 1.9's GroupedLinear"
    return (f"model.moe.grouped_gemm=true: no grouped-GEMM kernel here ({why}); the experts run as a sequential "
            "per-expert loop (SequentialMLP), same weights and outputs, slower")


def _overlap(caps: Capabilities, requested: Overlap, distributed: bool, data_parallel: int) -> tuple[bool, bool, str]:
    """(grad reduce overlapped, param gather overlapped, why not)."""
    if data_parallel <= 1:
        return False, False, "data-parallel size 1"
    if requested.grad_reduce is False:
        return False, False, "data_parallel.overlap_grad_reduce=false"
    if requested.grad_reduce is None and not caps.cuda:
        return False, False, "CPU run; set data_parallel.overlap_grad_reduce=true to overlap gloo collectives"
    gather = distributed and requested.param_gather is not False
    return True, gather, ""


def decide(caps: Capabilities, model: ModelConfig, parallel: ParallelConfig, precision: str,
           fp8: Fp8Config | None, execution: Execution = Execution(), data_parallel: int = 1,
           distributed_optimizer_supported: bool = False) -> Decision:
    """The decision for `model` at `parallel` under `caps`; `precision` is fp32, bf16 or fp8 (with `fp8`)."""
    fp8 = fp8 if precision == "fp8" else None
    fp8_layers = max(0, model.num_layers - 2 * fp8.bf16_layers) if fp8 is not None else 0
    distributed = execution.distributed_optimizer and distributed_optimizer_supported
    grad, gather, why = _overlap(caps, execution.overlap, distributed, data_parallel)
    fallback = grouped_gemm_fallback(caps, model)
    return Decision(
        capabilities=caps, precision=precision, fusions=tuple(_fusion_table(caps, model, parallel, precision, execution)),
        fp8=fp8, fp8_layers=fp8_layers, grouped_gemm=bool(model.moe and model.moe.grouped_gemm and fallback is None),
        distributed_optimizer=distributed, overlap_grad_reduce=grad, overlap_param_gather=gather,
        bucket_size=execution.overlap.bucket_size if grad else None, overlap_why=why,
        warnings=(fallback,) if fallback else ())


def decide_for(model: ModelConfig, runtime: Runtime, execution: Execution = Execution()) -> Decision:
    """The decision for `model` on a live runtime `runtime` (factory.runtime.runtime.Runtime)."""
    return decide(runtime.capabilities, model, runtime.parallel, runtime.precision, runtime.fp8, execution,
                  runtime.data_parallel_size, runtime.supports_distributed_optimizer)


def config_problems(runtime: Runtime, parallel: ParallelConfig, model: ModelConfig | None) -> list[str]:
    """Combinations that would crash when the model is built, refused at config time, one line each: sequence
    parallelism and FP8 without Transformer Engine layers, FP8 bf16 layers beyond a pipeline stage's layers."""
    out: list[str] = []
    te = runtime.device != "cpu" and runtime.planned_transformer_engine(on_gpu=True)
    where = ("runtime.device is cpu" if runtime.device == "cpu" else
             "runtime.transformer_engine is disabled" if runtime.transformer_engine == "disabled" else
             "transformer_engine is not importable here; install it, or set runtime.transformer_engine=required "
             "to plan for the GPU nodes' copy")
    if parallel.sequence_parallel and not te:
        out.append(f"parallel.sequence_parallel=True: needs Transformer Engine layers (Megatron's local RMSNorm "
                   f"does not shard over the sequence) and {where}")
    if runtime.precision == "fp8" and runtime.device != "cpu" and runtime.transformer_engine != "disabled" and not te:
        out.append(f"runtime.precision=fp8: needs Transformer Engine and {where}")
    if runtime.precision == "fp8" and model is not None:
        out += _fp8_model_problems(runtime.fp8, parallel, model)
    return out


FP8_MULTIPLE = 16
"""Transformer Engine's FP8 GEMMs take matrices whose dimensions are multiples of 16 (8 for the token dimension)."""


def _fp8_model_problems(fp8: Fp8Config, parallel: ParallelConfig, model: ModelConfig) -> list[str]:
    out: list[str] = []
    per_stage = model.num_layers // parallel.pipeline
    if fp8.bf16_layers > per_stage:
        out.append(f"runtime.fp8.bf16_layers={fp8.bf16_layers}: more than the {per_stage} layers of a pipeline stage "
                   f"(model.num_layers / parallel.pipeline)")
    shards = {"model.hidden_size": model.hidden_size, "model.ffn_hidden_size": model.ffn_hidden_size // parallel.tensor,
              "model.seq_length": model.seq_length}
    for key, size in shards.items():
        if size % FP8_MULTIPLE:
            out.append(f"{key}={getattr(model, key.split('.')[1])}: runtime.precision=fp8 needs GEMM dimensions in "
                       f"multiples of {FP8_MULTIPLE} (per tensor-parallel shard); this gives {size}")
    return out
