"""Per-GPU memory plan of a training run at its parallel layout, in closed form (no torch).

Per pipeline stage and rank: parameters, fp32 gradient buffer, Adam state (sharded over data-parallel
ranks by the distributed optimizer), activations of the micro-batches in flight (1F1B holds
`pipeline - stage` of them), and the fp32 logits of the loss on the last stage. The activation terms
count the tensors Megatron-Core's local layer saves for backward (RMSNorm, linears, RoPE, flash/SDPA
attention, SwiGLU, MoE dispatch), measured per layer with `torch.autograd.graph.saved_tensors_hooks`;
tests/slow/test_memory_plan.py compares the total with the measured peak of real training steps. A run on
Transformer Engine layers (runtime.transformer_engine) saves less in its dense parts (fused norm+linear, fused
attention); those terms are read from TE's autograd functions, not measured here (no GPU), and MoE experts keep
the local accounting. The plan reads the execution decision (factory/model/execution.py) the run makes: Megatron's
fused SwiGLU saves only fc1's output and recomputes the activation in backward; freed pipeline outputs drop the
stage output each in-flight micro-batch would keep; FP8 layers save their GEMM inputs in one byte and keep FP8
copies of their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.config_base import CoreConfig
from factory.launch_config import LaunchConfig
from factory.model.config import ModelConfig
from factory.model.execution import Decision, decide
from factory.runtime import capabilities
from factory.runtime.config import ParallelConfig
from factory.train.config import TrainConfig

GIB = 2**30
CUDA_RESERVE_BYTES = 4 * GIB
"""CUDA context, NCCL buffers and allocator slack on a GPU: an allowance, not computed (see docs/stages/train.md)."""


@dataclass(frozen=True)
class TrainingShape:
    """What besides the model and layout decides memory: batch, precision, optimizer, recompute."""

    world_size: int
    micro_batch_size: int
    micro_batches: int
    """Micro-batches per rank per step (global / (micro x DP))."""
    param_bytes: int
    """2 for bf16 training, 4 for fp32."""
    distributed_optimizer: bool
    recompute: str = "none"
    z_loss: bool = False
    on_gpu: bool = False
    transformer_engine: bool = False
    """Transformer Engine layers (their saved activations) instead of Megatron's local ones."""
    fused_swiglu: bool = False
    """Megatron's fused SwiGLU (the decision's `swiglu`): fc1's output is saved, the activation recomputed."""
    freed_pipeline_outputs: bool = False
    """The schedule frees each stage output once sent (`pipeline-dealloc`)."""
    fp8_bf16_layers: int | None = None
    """An FP8 run: the layers kept in bf16 at each end of the model; None for a run without FP8."""


@dataclass(frozen=True)
class StageMemory:
    """Bytes one rank of pipeline stage `stage` holds at its peak."""

    stage: int
    parameters: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    reserve: float
    fp8_weights: float = 0.0
    """FP8 copies (and transposes) of the FP8 layers' GEMM weights that Transformer Engine keeps."""

    @property
    def total(self) -> float:
        return (self.parameters + self.gradients + self.optimizer + self.activations + self.logits + self.reserve
                + self.fp8_weights)

    def describe(self) -> str:
        parts = [("params", self.parameters), ("grads", self.gradients), ("optimizer", self.optimizer),
                 ("activations", self.activations), ("logits", self.logits)]
        if self.fp8_weights:
            parts.append(("FP8 weight copies", self.fp8_weights))
        if self.reserve:
            parts.append(("CUDA reserve", self.reserve))
        return f"{self.total / GIB:.1f} GiB = " + " + ".join(f"{name} {b / GIB:.1f}" for name, b in parts)


@dataclass(frozen=True)
class MemoryPlan:
    layout: str
    data_parallel: int
    shape: TrainingShape
    stages: list[StageMemory]

    @property
    def largest(self) -> StageMemory:
        return max(self.stages, key=lambda s: s.total)

    def describe(self) -> str:
        s, big = self.shape, self.largest
        where = f"largest on stage {big.stage} of {len(self.stages)}" if len(self.stages) > 1 else "every rank"
        layers = "Transformer Engine" if s.transformer_engine else "local"
        swiglu = "fused" if s.fused_swiglu else "unfused"
        fp8 = ", FP8" if s.fp8_bf16_layers is not None else ""
        return (f"per-GPU memory at {self.layout}, DP {self.data_parallel}, micro-batch {s.micro_batch_size}, "
                f"recompute {s.recompute}, {layers} layers{fp8}, {swiglu} SwiGLU: {where} {big.describe()}")


def layer_parameters(model: ModelConfig, parallel: ParallelConfig) -> tuple[float, float]:
    """(dense, expert) parameters of one transformer layer on one rank."""
    h, hd, t = model.hidden_size, model.head_dim, parallel.tensor
    attention = h * hd * (2 * model.num_attention_heads + 2 * model.query_groups) / t
    norms = 2 * h + (2 * hd if model.qk_layernorm else 0)
    dense, expert = attention + norms, 0.0
    if model.moe is None:
        dense += 3 * h * model.ffn_hidden_size / t
    else:
        m = model.moe
        dense += h * m.num_experts + 3 * h * (m.shared_expert_ffn_hidden_size or 0) / t
        expert = (m.num_experts / parallel.expert) * 3 * h * (m.ffn_hidden_size or model.ffn_hidden_size) \
            / parallel.expert_tensor_size
    return dense, expert


def stage_parameters(model: ModelConfig, parallel: ParallelConfig, stage: int) -> tuple[float, float]:
    """(dense, expert) parameters one rank of pipeline stage `stage` holds."""
    h, t = model.hidden_size, parallel.tensor
    layers = model.num_layers // parallel.pipeline
    dense, expert = layer_parameters(model, parallel)
    table = model.padded_vocab_size(t) * h / t
    first, last = stage == 0, stage == parallel.pipeline - 1
    ends = table if first else 0.0
    if last:  # final norm and output layer (a tied output keeps its own copy on a later stage)
        ends += h + (table if model.untie_embeddings_and_output_weights or not first else 0.0)
    return layers * dense + ends, layers * expert


def layer_activation_elements(model: ModelConfig, parallel: ParallelConfig, micro_batch_size: int,
                              transformer_engine: bool = False, fused_swiglu: bool = False) -> float:
    """Elements one transformer layer saves for backward per token of a micro-batch (no recompute)."""
    h, hd, t = model.hidden_size, model.head_dim, parallel.tensor
    q, kv, heads = model.num_attention_heads * hd, model.query_groups * hd, model.num_attention_heads
    rope = 4 * hd / micro_batch_size  # cos/sin tables, shared by the micro-batch's sequences
    # SwiGLU per intermediate element: fused, fc1 out (2) and fc2 input (1); unfused also SiLU's output and
    # the linear half plus Megatron's glu_linear_offset (a new tensor)
    swiglu = 3 if fused_swiglu else 5
    if transformer_engine:
        replicated = 2 * (2 * h + 1)  # two fused norm+linears: input, normalized output, rstd
        attention = (2 * q + 2 * kv + 2 * heads) / t + rope  # RoPE'd q/k/v, output, fp32 softmax stats
    else:
        replicated = 2 * (2 * h + 1) + 2 * h  # two RMSNorms (input, output, rstd), QKV and FFN linear inputs
        attention = (3 * q + 3 * kv + heads) / t + rope  # QKV out, RoPE'd q/k, out, lse
        if model.attention == "local":
            attention += heads * model.seq_length / t  # softmax probabilities, s x s per head
    if parallel.sequence_parallel:
        replicated /= t
    if model.moe is None:
        ffn = swiglu * model.ffn_hidden_size / t
    else:
        m = model.moe
        expert_ffn = m.ffn_hidden_size or model.ffn_hidden_size
        ffn = 2 * m.num_experts + 3 * m.router_topk + m.router_topk * h  # router, permuted tokens
        # per routed copy: SwiGLU, then the product with the routing probability (fused: inside the kernel)
        ffn += m.router_topk * ((swiglu + (0 if fused_swiglu else 1)) * expert_ffn / parallel.expert_tensor_size + 1)
        ffn += swiglu * (m.shared_expert_ffn_hidden_size or 0) / t
    return replicated + attention + ffn


def fp8_gemm_input_elements(model: ModelConfig, parallel: ParallelConfig) -> float:
    """Elements per token of an FP8 layer's dense GEMM inputs, which Transformer Engine saves in one byte: the
    two normalized inputs, the attention output and fc2's input (MoE experts are left at bf16: an upper bound)."""
    t = parallel.tensor
    norms = 2 * model.hidden_size / (t if parallel.sequence_parallel else 1)
    ffn = model.ffn_hidden_size if model.moe is None else (model.moe.shared_expert_ffn_hidden_size or 0)
    return norms + (model.num_attention_heads * model.head_dim + ffn) / t


def fp8_layers_of_stage(model: ModelConfig, parallel: ParallelConfig, shape: TrainingShape, stage: int) -> int:
    """Layers of pipeline stage `stage` that run in FP8 (Megatron counts the bf16 ends in global layer numbers)."""
    if shape.fp8_bf16_layers is None:
        return 0
    per_stage, ends = model.num_layers // parallel.pipeline, shape.fp8_bf16_layers
    layers = range(stage * per_stage, (stage + 1) * per_stage)
    return sum(ends <= layer < model.num_layers - ends for layer in layers)


def stage_activation_bytes(model: ModelConfig, parallel: ParallelConfig, shape: TrainingShape, stage: int) -> float:
    """Activations of the micro-batches stage `stage` holds at once under 1F1B, plus one layer's worth:
    the layer being recomputed (full) or whose input gradients are being formed in backward."""
    tokens = model.seq_length * shape.micro_batch_size / parallel.context
    layers = model.num_layers // parallel.pipeline
    per_layer = layer_activation_elements(model, parallel, shape.micro_batch_size, shape.transformer_engine,
                                          shape.fused_swiglu)
    stage_output = model.hidden_size / (parallel.tensor if parallel.sequence_parallel else 1)
    if shape.recompute == "full":  # each layer keeps only its input
        saved = layers * stage_output
    elif shape.recompute == "selective" and model.attention == "local" and not shape.transformer_engine:
        # the s x s probabilities are recomputed
        saved = layers * (per_layer - model.num_attention_heads * model.seq_length / parallel.tensor)
    else:
        saved = layers * per_layer
    if stage == parallel.pipeline - 1:
        saved += 3 * model.hidden_size  # final norm and output-layer input
    elif not shape.freed_pipeline_outputs:  # the schedule keeps the output it sent until its backward
        saved += stage_output
    in_flight = min(parallel.pipeline - stage, shape.micro_batches)
    total = tokens * (in_flight * saved + per_layer) * shape.param_bytes
    if shape.recompute != "full":  # FP8 layers' GEMM inputs take one byte instead of param_bytes
        fp8 = fp8_layers_of_stage(model, parallel, shape, stage) * fp8_gemm_input_elements(model, parallel)
        total -= tokens * in_flight * fp8 * (shape.param_bytes - 1)
    return total


def logits_bytes(model: ModelConfig, parallel: ParallelConfig, shape: TrainingShape) -> float:
    """fp32 logits of one micro-batch on the last stage: the loss's softmax, computed in place (one copy);
    z-loss keeps the logits, a contiguous copy and the logsumexp's exponentials too (four)."""
    tokens = model.seq_length * shape.micro_batch_size / parallel.context
    copies = 4 if shape.z_loss else 1
    return tokens * model.padded_vocab_size(parallel.tensor) / parallel.tensor * 4 * copies


def plan_memory(model: ModelConfig, parallel: ParallelConfig, shape: TrainingShape) -> MemoryPlan:
    """The memory plan of every pipeline stage of `model` at `parallel` for `shape`."""
    dp = max(1, shape.world_size // parallel.model_parallel_size)
    expert_dp = max(1, shape.world_size // (parallel.expert * parallel.expert_tensor_size * parallel.pipeline))
    optimizer_bytes = (12 if shape.param_bytes == 2 else 8)  # (fp32 master copy +) Adam moments
    stages = []
    layer_weights = sum(layer_parameters(model, parallel))  # norms and router included: a small overcount
    for stage in range(parallel.pipeline):
        dense, expert = stage_parameters(model, parallel, stage)
        fp8_layers = fp8_layers_of_stage(model, parallel, shape, stage)
        params = dense + expert
        sharded = dense / dp + expert / expert_dp if shape.distributed_optimizer else params
        stages.append(StageMemory(
            stage=stage, parameters=params * shape.param_bytes, gradients=params * 4,
            optimizer=sharded * optimizer_bytes,
            activations=stage_activation_bytes(model, parallel, shape, stage),
            logits=logits_bytes(model, parallel, shape) if stage == parallel.pipeline - 1 else 0.0,
            reserve=CUDA_RESERVE_BYTES if shape.on_gpu else 0.0,
            fp8_weights=2 * fp8_layers * layer_weights))  # an FP8 copy and its transpose, one byte each
    return MemoryPlan(layout=parallel.describe(), data_parallel=dp, shape=shape, stages=stages)


def planned_world(cfg: CoreConfig, stage: str) -> tuple[bool, int]:
    """(whether runs of `stage` go to GPUs, their world size): from `launch` as it applies to `stage` (nodes x
    processes per node; its defaults for a GPU config without one, one process for a CPU one)."""
    launch = (cfg.launch or LaunchConfig()).for_stage(stage)
    on_gpu = cfg.runtime.targets_gpu(gpu_launch=cfg.launch is not None and launch.gpus_per_node > 0)
    world = launch.nodes * launch.processes_per_node if cfg.launch is not None or on_gpu else 1  # a plain CPU run
    return on_gpu, world


def planned_decision(cfg: CoreConfig, train: TrainConfig, stage: str, model: ModelConfig | None = None) -> Decision:
    """The execution decision runs of `stage` will make (factory/model/execution.py), from the capabilities a
    plan assumes (factory/runtime/capabilities.py `planned`)."""
    on_gpu, world = planned_world(cfg, stage)
    caps = capabilities.planned(on_gpu, cfg.runtime.planned_transformer_engine(on_gpu))
    return decide(caps, model or cfg.model, cfg.parallel, cfg.runtime.planned_precision(on_gpu),
                  cfg.runtime.planned_fp8(), train.execution(), max(1, world // cfg.parallel.model_parallel_size),
                  distributed_optimizer_supported=on_gpu)


def training_shape(cfg: CoreConfig, train: TrainConfig, stage: str, model: ModelConfig | None = None) -> TrainingShape:
    """The shape a config's training section runs at (`planned_world`), bf16 and the distributed optimizer where
    it targets GPUs, and the execution decision's fusions and FP8 layers."""
    on_gpu, world = planned_world(cfg, stage)
    decision = planned_decision(cfg, train, stage, model)
    dp = max(1, world // cfg.parallel.model_parallel_size)
    return TrainingShape(
        world_size=world, micro_batch_size=train.micro_batch_size,
        micro_batches=max(1, train.global_batch_size // (train.micro_batch_size * dp)),
        param_bytes=4 if decision.precision == "fp32" else 2, distributed_optimizer=decision.distributed_optimizer,
        recompute=train.recompute, z_loss=train.z_loss_coeff > 0, on_gpu=on_gpu,
        transformer_engine=decision.capabilities.transformer_engine, fused_swiglu=decision.fused("swiglu"),
        freed_pipeline_outputs=decision.fused("pipeline-dealloc"),
        fp8_bf16_layers=decision.fp8.bf16_layers if decision.fp8 is not None else None)


def memory_problems(cfg: CoreConfig, section: str) -> list[str]:
    """Config check of `section` at its config's model (a cpt from a checkpoint is checked by its plan)."""
    if cfg.model is None:
        return []
    shape = training_shape(cfg, getattr(cfg, section), section)
    return over_limit(cfg, section, plan_memory(cfg.model, cfg.parallel, shape))


def over_limit(cfg: CoreConfig, section: str, plan: MemoryPlan) -> list[str]:
    """One line when `plan`'s largest stage exceeds `launch.gpu_memory_gb` (GPU runs only; the training stage's
    own value where `launch.stages` sets one)."""
    if not plan.shape.on_gpu:
        return []
    limit = (cfg.launch or LaunchConfig()).for_stage(section).gpu_memory_gb
    if plan.largest.total <= limit * GIB:
        return []
    engine = "" if plan.shape.transformer_engine else ", runtime.transformer_engine=required"
    return [f"{section}: does not fit launch.gpu_memory_gb={limit:g}: {plan.describe()}; use more pipeline or "
            f"tensor stages, a smaller {section}.micro_batch_size{engine} or {section}.recompute=full"]
