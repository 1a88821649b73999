"""Training probes of the doctor's performance checks: real training steps (build_model's DDP, optimizer and
execution decision, Megatron's schedule, the training step's loss) on fixed synthetic tokens, timed, with the
peak GPU memory against the memory plan of the same shape."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from factory.config_base import CoreConfig
from factory.doctor.checks import DoctorContext
from factory.doctor.shapes import Probe
from factory.model.config import ModelConfig
from factory.model.execution import decide_for
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.runtime.memory import peak_memory, reset_peak_memory
from factory.train.config import TrainConfig
from factory.train.memory import TrainingShape, plan_memory, training_shape

if TYPE_CHECKING:  # for annotations only
    from megatron.core.models.gpt import GPTModel

    from factory.runtime.runtime import Runtime

GIB = 2**30
DISTINCT_BATCHES = 2
"""The probe cycles through this many fixed batches, so the loss falls (the model memorizes them)."""


@dataclass
class ProbeResult:
    losses: list[float]
    seconds_per_step: float
    """Mean over the timed steps."""
    tokens_per_step: int
    peak_bytes: int | None
    """Peak bytes allocated on the device over the probe (None on CPU: not counted)."""
    plan_bytes: float
    """The memory plan's figure for the same shape, without its CUDA reserve (what the allocator counts)."""
    decision: object
    """The execution decision the probe ran with (factory/model/execution.py)."""
    peak_flops: float | None
    experts: str | None = None
    """An MoE's expert and dispatcher modules as built (what actually ran), e.g. SequentialMLP + MoEAlltoAll..."""
    initial: dict | None = None
    """The parameters before the first step, by name (to start another probe from the same weights)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.seconds_per_step

    def memory_ratio(self) -> float | None:
        return self.peak_bytes / self.plan_bytes if self.peak_bytes is not None else None


def _batches(model_cfg, probe: Probe, device) -> list[list[dict]]:
    """DISTINCT_BATCHES steps' worth of micro-batches of random tokens (seeded: every probe of a shape sees the same)."""
    generator = torch.Generator().manual_seed(0)
    seq, vocab = model_cfg.seq_length, model_cfg.vocab_size
    steps = []
    for _ in range(DISTINCT_BATCHES):
        micro = []
        for _ in range(probe.micro_batches):
            tokens = torch.randint(0, vocab, (probe.micro_batch_size, seq + 1), generator=generator)
            micro.append({"tokens": tokens[:, :-1].to(device), "labels": tokens[:, 1:].to(device),
                          "loss_mask": torch.ones(probe.micro_batch_size, seq, device=device),
                          "position_ids": torch.arange(seq, device=device).expand(probe.micro_batch_size, seq)})
        steps.append(micro)
    return steps


def _planned_bytes(model_cfg, runtime: Runtime, probe: Probe, decision) -> float:
    shape = TrainingShape(
        world_size=1, micro_batch_size=probe.micro_batch_size, micro_batches=probe.micro_batches,
        param_bytes=4 if runtime.dtype == torch.float32 else 2, distributed_optimizer=decision.distributed_optimizer,
        transformer_engine=decision.capabilities.transformer_engine, fused_swiglu=decision.fused("swiglu"),
        freed_pipeline_outputs=decision.fused("pipeline-dealloc"),
        fp8_bf16_layers=decision.fp8.bf16_layers if decision.fp8 is not None else None)
    return plan_memory(model_cfg, ParallelConfig(), shape).largest.total


def train_probe(model_cfg: ModelConfig, runtime_cfg: RuntimeConfig, probe: Probe, steps: int | None = None,
                lr: float = 1e-3, initial: dict | None = None, keep_initial: bool = False) -> ProbeResult:
    """Train `model_cfg` for warmup + timed steps (or `steps`, all timed) in a world of one; `initial` replaces
    the freshly initialized parameters (cast to this run's dtype) before the optimizer copies them;
    `keep_initial` returns the starting parameters (fp32, on the CPU) for another probe."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from factory.runtime.runtime import runtime_session
    from factory.train.setup import build_model
    from factory.train.step import make_forward_step

    warmup, timed = (0, steps) if steps is not None else (probe.warmup_steps, probe.timed_steps)
    train = TrainConfig.model_validate({
        "train_iters": warmup + timed, "micro_batch_size": probe.micro_batch_size,
        "global_batch_size": probe.micro_batch_size * probe.micro_batches,
        "optimizer": {"lr": lr, "min_lr": lr, "weight_decay": 0.0}})
    with runtime_session(runtime_cfg, ParallelConfig()) as runtime:
        reset_peak_memory(runtime.device)  # an earlier probe's model does not count
        model, ddp, optimizer = build_model(model_cfg, runtime, train, lr, lr)
        start = {name: p.detach().float().cpu().clone() for name, p in model.named_parameters()} \
            if keep_initial else None
        if initial is not None:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(initial[name])
            optimizer.reload_model_params()
        batches, step_fn, run = _batches(model_cfg, probe, runtime.device), make_forward_step(0.0, runtime.device), \
            get_forward_backward_func()
        losses, seconds = [], 0.0
        for i in range(warmup + timed):
            runtime.synchronize()
            began = time.perf_counter()
            with runtime.compute_context():
                ddp.zero_grad_buffer()
                optimizer.zero_grad()
                out = run(forward_step_func=step_fn, data_iterator=iter(batches[i % DISTINCT_BATCHES]), model=[ddp],
                          num_microbatches=probe.micro_batches, seq_length=model_cfg.seq_length,
                          micro_batch_size=probe.micro_batch_size, forward_only=False)
                optimizer.step()
            runtime.synchronize()
            if i >= warmup:
                seconds += time.perf_counter() - began
            sums = torch.stack([entry["lm loss"] for entry in out]).sum(0)
            losses.append((sums[0] / sums[1]).item())
        peak = peak_memory(runtime.device)
        decision = decide_for(model_cfg, runtime, train.execution())
        return ProbeResult(losses=losses, seconds_per_step=seconds / timed, tokens_per_step=probe.tokens_per_step,
                           peak_bytes=peak, plan_bytes=_planned_bytes(model_cfg, runtime, probe, decision),
                           decision=decision, peak_flops=runtime.peak_flops(), experts=experts_built(model),
                           initial=start)


def experts_built(model: GPTModel) -> str | None:
    """The expert and token-dispatcher classes of the first MoE layer of a GPTModel, or None for a dense one."""
    mlp = model.decoder.layers[0].mlp
    if not hasattr(mlp, "experts"):
        return None
    return f"{type(mlp.experts).__name__} + {type(mlp.token_dispatcher).__name__}"


def record_memory(context: DoctorContext, label: str, peak: int | None, plan: float) -> str:
    """Keep a training check's peak GPU memory and its plan for the memory_plan check; the figure's words for it."""
    if peak is None:
        return "peak memory not measured on CPU"
    context.artifacts.setdefault("memory", {})[label] = (peak, plan)
    return f"peak {peak / GIB:.2f} GiB = {peak / plan:.2f} x plan {plan / GIB:.2f}"


def stage_plan_bytes(cfg: CoreConfig) -> float:
    """The memory plan of a config's pretrain section run by one process, without the CUDA reserve."""
    import dataclasses


    train = cfg.pretrain
    shape = dataclasses.replace(training_shape(cfg, train, "pretrain"), world_size=1, on_gpu=False,
                                micro_batches=train.global_batch_size // train.micro_batch_size)
    return plan_memory(cfg.model, cfg.parallel, shape).largest.total


def stage_memory(context: DoctorContext, label: str, cfg: CoreConfig) -> str:
    """`record_memory` for a pretrain stage run in this process (one rank) since `reset_peak_memory()`."""
    peak = peak_memory()
    return record_memory(context, label, peak, stage_plan_bytes(cfg) if peak is not None else 0.0)
