"""Per-GPU memory plan of a training run at its parallel layout, in closed form (no torch).

Per pipeline stage and rank: parameters, fp32 gradient buffer, Adam state (sharded over data-parallel
ranks by the distributed optimizer), activations of the micro-batches in flight (1F1B holds
`pipeline - stage` of them), and the fp32 logits of the loss on the last stage. The activation terms
count the tensors Megatron-Core's local layer saves for backward (RMSNorm, linears, RoPE, flash/SDPA
attention, SwiGLU, MoE dispatch), measured per layer with `torch.autograd.graph.saved_tensors_hooks`;
tests/slow/test_memory_plan.py compares the total with the measured peak of real training steps. A run on
Transformer Engine layers (runtime.transformer_engine) saves less in its dense parts (fused norm+linear,
fused attention, SwiGLU recomputed from fc1's output); those terms are read from TE's autograd functions,
not measured here (no GPU), and MoE experts keep the local accounting.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig

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

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.logits + self.reserve

    def describe(self) -> str:
        parts = [("params", self.parameters), ("grads", self.gradients), ("optimizer", self.optimizer),
                 ("activations", self.activations), ("logits", self.logits)]
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
        return (f"per-GPU memory at {self.layout}, DP {self.data_parallel}, micro-batch {s.micro_batch_size}, "
                f"recompute {s.recompute}, {layers} layers: {where} {big.describe()}")


def stage_parameters(model: ModelConfig, parallel: ParallelConfig, stage: int) -> tuple[float, float]:
    """(dense, expert) parameters one rank of pipeline stage `stage` holds."""
    h, hd, t = model.hidden_size, model.head_dim, parallel.tensor
    layers = model.num_layers // parallel.pipeline
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
    table = model.padded_vocab_size(t) * h / t
    first, last = stage == 0, stage == parallel.pipeline - 1
    ends = table if first else 0.0
    if last:  # final norm and output layer (a tied output keeps its own copy on a later stage)
        ends += h + (table if model.untie_embeddings_and_output_weights or not first else 0.0)
    return layers * dense + ends, layers * expert


def layer_activation_elements(model: ModelConfig, parallel: ParallelConfig, micro_batch_size: int,
                              transformer_engine: bool = False) -> float:
    """Elements one transformer layer saves for backward per token of a micro-batch (no recompute)."""
    h, hd, t = model.hidden_size, model.head_dim, parallel.tensor
    q, kv, heads = model.num_attention_heads * hd, model.query_groups * hd, model.num_attention_heads
    rope = 4 * hd / micro_batch_size  # cos/sin tables, shared by the micro-batch's sequences
    if transformer_engine:
        replicated = 2 * (2 * h + 1)  # two fused norm+linears: input, normalized output, rstd
        attention = (2 * q + 2 * kv + 2 * heads) / t + rope  # RoPE'd q/k/v, output, fp32 softmax stats
        dense_ffn = 3 * model.ffn_hidden_size / t  # fc1 out (2f), SwiGLU out; SwiGLU is redone in backward
    else:
        replicated = 2 * (2 * h + 1) + 2 * h  # two RMSNorms (input, output, rstd), QKV and FFN linear inputs
        attention = (3 * q + 3 * kv + heads) / t + rope  # QKV out, RoPE'd q/k, out, lse
        if model.attention == "local":
            attention += heads * model.seq_length / t  # softmax probabilities, s x s per head
        dense_ffn = 5 * model.ffn_hidden_size / t  # fc1 out (2f), SiLU, product, fc2 input
    if parallel.sequence_parallel:
        replicated /= t
    if model.moe is None:
        ffn = dense_ffn
    else:
        m = model.moe
        expert_ffn = m.ffn_hidden_size or model.ffn_hidden_size
        ffn = 2 * m.num_experts + 3 * m.router_topk + m.router_topk * h  # router, permuted tokens
        ffn += m.router_topk * (6 * expert_ffn / parallel.expert_tensor_size + 1)  # expert SwiGLU x probs
        ffn += 5 * (m.shared_expert_ffn_hidden_size or 0) / t
    return replicated + attention + ffn


def stage_activation_bytes(model: ModelConfig, parallel: ParallelConfig, shape: TrainingShape, stage: int) -> float:
    """Activations of the micro-batches stage `stage` holds at once under 1F1B, plus one layer's worth:
    the layer being recomputed (full) or whose input gradients are being formed in backward."""
    tokens = model.seq_length * shape.micro_batch_size / parallel.context
    layers = model.num_layers // parallel.pipeline
    per_layer = layer_activation_elements(model, parallel, shape.micro_batch_size, shape.transformer_engine)
    if shape.recompute == "full":  # each layer keeps only its input
        saved = layers * model.hidden_size / (parallel.tensor if parallel.sequence_parallel else 1)
    elif shape.recompute == "selective" and model.attention == "local" and not shape.transformer_engine:
        # the s x s probabilities are recomputed
        saved = layers * (per_layer - model.num_attention_heads * model.seq_length / parallel.tensor)
    else:
        saved = layers * per_layer
    if stage == parallel.pipeline - 1:
        saved += 3 * model.hidden_size  # final norm and output-layer input
    in_flight = min(parallel.pipeline - stage, shape.micro_batches)
    return tokens * (in_flight * saved + per_layer) * shape.param_bytes


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
    for stage in range(parallel.pipeline):
        dense, expert = stage_parameters(model, parallel, stage)
        params = dense + expert
        sharded = dense / dp + expert / expert_dp if shape.distributed_optimizer else params
        stages.append(StageMemory(
            stage=stage, parameters=params * shape.param_bytes, gradients=params * 4,
            optimizer=sharded * optimizer_bytes,
            activations=stage_activation_bytes(model, parallel, shape, stage),
            logits=logits_bytes(model, parallel, shape) if stage == parallel.pipeline - 1 else 0.0,
            reserve=CUDA_RESERVE_BYTES if shape.on_gpu else 0.0))
    return MemoryPlan(layout=parallel.describe(), data_parallel=dp, shape=shape, stages=stages)


def training_shape(cfg, train, stage: str) -> TrainingShape:
    """The shape a config's training section runs at: world from `launch` as it applies to `stage` (nodes x
    processes per node; its defaults for a GPU config without one, one process for a CPU one), bf16 and the
    distributed optimizer where it targets GPUs."""
    from factory.launch.config import LaunchConfig

    launch = (cfg.launch or LaunchConfig()).for_stage(stage)
    on_gpu = cfg.runtime.targets_gpu(gpu_launch=cfg.launch is not None and launch.gpus_per_node > 0)
    precision = cfg.runtime.planned_precision(on_gpu)
    world = launch.nodes * launch.processes_per_node if cfg.launch is not None or on_gpu else 1  # a plain CPU run
    dp = max(1, world // cfg.parallel.model_parallel_size)
    return TrainingShape(
        world_size=world, micro_batch_size=train.micro_batch_size,
        micro_batches=max(1, train.global_batch_size // (train.micro_batch_size * dp)),
        param_bytes=2 if precision == "bf16" else 4, distributed_optimizer=train.optimizer.distributed and on_gpu,
        recompute=train.recompute, z_loss=train.z_loss_coeff > 0, on_gpu=on_gpu,
        transformer_engine=cfg.runtime.planned_transformer_engine(on_gpu))


def memory_problems(cfg, section: str) -> list[str]:
    """Config check of `section` at its config's model (a cpt from a checkpoint is checked by its plan)."""
    if cfg.model is None:
        return []
    shape = training_shape(cfg, getattr(cfg, section), section)
    return over_limit(cfg, section, plan_memory(cfg.model, cfg.parallel, shape))


def over_limit(cfg, section: str, plan: MemoryPlan) -> list[str]:
    """One line when `plan`'s largest stage exceeds `launch.gpu_memory_gb` (GPU runs only; the training stage's
    own value where `launch.stages` sets one)."""
    from factory.launch.config import LaunchConfig

    if not plan.shape.on_gpu:
        return []
    limit = (cfg.launch or LaunchConfig()).for_stage(section).gpu_memory_gb
    if plan.largest.total <= limit * GIB:
        return []
    engine = "" if plan.shape.transformer_engine else ", runtime.transformer_engine=required"
    return [f"{section}: does not fit launch.gpu_memory_gb={limit:g}: {plan.describe()}; use more pipeline or "
            f"tensor stages, a smaller {section}.micro_batch_size{engine} or {section}.recompute=full"]
