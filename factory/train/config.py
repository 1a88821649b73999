"""Config sections of the training engine (`pretrain:` and `cpt:` share one schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from factory.model.execution import Execution, Overlap
from factory.schema import CONTINUES, OPERATIONAL, Section, rule


class OptimizerConfig(Section):
    """AdamW through Megatron's optimizer (distributed optimizer on CUDA)."""

    lr: float | None = Field(default=None, gt=0)
    """Peak learning rate. Required for pretrain; for cpt it defaults to the starting checkpoint's
    last learning rate (after upcycling, the dense run's final LR: higher peaks made loss climb)."""
    min_lr: float | None = Field(default=None, ge=0)
    """Learning rate at the end of decay; defaults to lr / 10 (Tanuki: 1e-4 -> 1e-6 sets it)."""
    weight_decay: float = Field(default=0.1, ge=0)
    """Decoupled weight decay; not applied to norms (Megatron's default grouping)."""
    adam_beta1: float = Field(default=0.9, gt=0, lt=1)
    adam_beta2: float = Field(default=0.95, gt=0, lt=1)
    adam_eps: float = Field(default=1e-8, gt=0)
    clip_grad: float = Field(default=1.0, ge=0)
    """Global gradient-norm clip; 0 disables it."""
    distributed: bool = True
    """Shard optimizer state over data-parallel ranks (ZeRO-1) where the runtime supports it (CUDA)."""


class DataParallelConfig(Section):
    """How gradients and parameters move between data-parallel ranks (Megatron's DistributedDataParallel)."""

    overlap_grad_reduce: bool | None = None
    """Reduce (or reduce-scatter) gradients bucket by bucket while the last micro-batch's backward runs; None: on
    for CUDA runs with more than one data-parallel rank, off on CPU."""
    overlap_param_gather: bool | None = None
    """Distributed optimizer: all-gather the updated parameters bucket by bucket as the next forward reaches
    them; None: on wherever gradient reduction is overlapped and the distributed optimizer runs."""
    bucket_size: int | None = Field(default=None, ge=1)
    """Elements per communication bucket when overlapping; None: Megatron's max(40M, 1M x DP)."""


class ScheduleConfig(Section):
    """Learning-rate schedule (Megatron's OptimizerParamScheduler), counted in iterations."""

    style: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    """cosine / linear decay after warmup, wsd (warmup-stable-decay) or constant."""
    warmup_iters: int = Field(default=0, ge=0)
    """Linear warmup from 0 to the peak LR."""
    decay_iters: int | None = Field(default=None, ge=1)
    """Iterations over which the LR decays (incl. warmup); defaults to train_iters."""
    wsd_decay_iters: int | None = Field(default=None, ge=1)
    """wsd only: length of the final decay phase."""
    wsd_decay_style: Literal["linear", "cosine", "exponential", "minus_sqrt"] = "linear"
    """wsd only: shape of the final decay."""


class CheckpointConfig(Section):
    """When checkpoints are written and which are kept."""

    save_interval: int | None = Field(default=None, ge=1)
    """Save every N iterations (and always at the end and on SIGTERM/SIGUSR1)."""
    keep_last: int = Field(default=2, ge=1)
    """Most recent checkpoints kept."""
    keep_every: int | None = Field(default=None, ge=1)
    """Also keep every iteration divisible by this (LLM-jp kept every 1,000 steps)."""
    keep_every_optimizer: bool = True
    """Whether the iterations kept only for `keep_every` keep their optimizer state (12 of the 14 bytes per
    parameter of a bf16 run); without it they still load for evaluation, export or cpt with fresh optimizer state."""
    async_save: bool = False
    """Write periodic saves in a background thread: the step loop waits only for a snapshot of the tensors, and
    the save is committed at a later step. The final save and a stop signal's are always written before the
    run goes on or ends."""


class FaultConfig(Section):
    """Surviving long runs: hang watchdog and planned restarts (each saves a checkpoint first)."""

    hang_timeout_minutes: float | None = Field(default=None, gt=0)
    """No step finished in this long: dump every thread's stack and exit 124 (requeue)."""
    restart_every_hours: float | None = Field(default=None, gt=0)
    """Save and exit 75 after this much wall time, for the launcher to start a fresh process."""
    restart_on_slowdown: float | None = Field(default=None, gt=0, lt=1)
    """Save and exit 75 when tokens/s stays this fraction below its moving baseline ..."""
    slowdown_minutes: float = Field(default=10.0, gt=0)
    """... for this many minutes."""


class PhaseSpec(Section):
    """One phase of a multi-phase run: a blend phase trained until this run has seen `until_tokens`."""

    blend_file: Path | None = None
    """blend.json the phase reads; defaults to the section's blend_file (the pack stage's blend.json)."""
    phase: str | None = None
    """Phase name in that file; defaults to its first phase."""
    until_tokens: float | None = Field(default=None, gt=0)
    """Tokens of this run (not of its lineage) at which the next phase starts; unset for the last phase,
    which runs to train_iters."""


class TrainConfig(Section):
    """One training run on megatron.core: data, batch, optimizer, schedule, checkpoints, logging."""

    train_iters: Annotated[int, CONTINUES] = Field(ge=1)
    """Optimizer steps."""
    global_batch_size: int = Field(ge=1)
    """Sequences per optimizer step (all data-parallel ranks, all micro-batches)."""
    micro_batch_size: int = Field(default=1, ge=1)
    """Sequences per forward pass per rank; global / (micro x DP) micro-batches are accumulated."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    checkpoint: Annotated[CheckpointConfig, OPERATIONAL] = Field(default_factory=CheckpointConfig)
    fault: Annotated[FaultConfig, OPERATIONAL] = Field(default_factory=FaultConfig)
    data_parallel: Annotated[DataParallelConfig, OPERATIONAL] = Field(default_factory=DataParallelConfig)
    """Communication overlap: the same sums in another order of messages (gradients are reduced in fp32)."""
    phase: str | None = None
    """Blend phase to train on (see the blend section); defaults to the first phase. Ignored with `phases`."""
    phases: list[PhaseSpec] = Field(default_factory=list)
    """A schedule of blend phases switching at token counts (e.g. a main mix, then synthetic data only);
    empty: the one phase `blend_file` / `phase`."""
    blend_file: Path | None = None
    """The pack stage's blend.json; defaults to `<run.dir>/pack/blend.json`."""
    tokenizer_dir: Path | None = None
    """Folder with tokenizer.model (EOD id for the datasets); defaults to `<run.dir>/tokenizer`."""
    split: str = "98,2,0"
    """Train/valid/test split of each dataset, as Megatron-LM's --split."""
    init_from: Path | None = None
    """cpt: checkpoint (root or iter_ folder) to start from; its model config is used."""
    reset_optimizer: bool = True
    """cpt: start with fresh optimizer state (False keeps the checkpoint's Adam moments)."""
    recompute: Annotated[Literal["none", "selective", "full"], OPERATIONAL] = "none"
    """Activation recomputation (Megatron's recompute_granularity): selective recomputes core attention
    (saves the s x s scores of `model.attention=local`; little with SDPA/flash), full recomputes every layer
    from its input (one layer's activations held at a time). Memory, not numerics: changing it keeps a run."""
    z_loss_coeff: float = Field(default=0.0, ge=0)
    """Weight of the output z-loss, coeff * logsumexp(logits)^2 (PaLM; Tanuki used it)."""
    seed: int | None = None
    """Data shuffling seed; defaults to runtime.seed."""
    log_interval: Annotated[int, OPERATIONAL] = Field(default=1, ge=1)
    """Iterations between log lines."""
    eval_interval: Annotated[int | None, OPERATIONAL] = Field(default=None, ge=1)
    """Iterations between validation-loss evaluations (also run at the end when set)."""
    eval_iters: Annotated[int, OPERATIONAL] = Field(default=1, ge=1)
    """Global batches per evaluation."""
    tensorboard: Annotated[bool, OPERATIONAL] = True
    """Write TensorBoard event files to `<output>/tensorboard`."""
    wandb_project: Annotated[str | None, OPERATIONAL] = None
    """Log to Weights & Biases under this project (needs `wandb` installed)."""
    output_dir: Path | None = None
    """Defaults to `<run.dir>/<stage>`; checkpoints go to `<output>/checkpoints`."""

    def execution(self):
        """How this training runs the model (factory/model/execution.py): its recomputation, per-token loss
        (factory/train/step.py), who computes the loss, the optimizer it asks for and its overlap settings."""

        dp = self.data_parallel
        return Execution(recompute=self.recompute, per_token_loss=True, model_loss=self.z_loss_coeff == 0,
                         distributed_optimizer=self.optimizer.distributed,
                         overlap=Overlap(dp.overlap_grad_reduce, dp.overlap_param_gather, dp.bucket_size))

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, self.global_batch_size % self.micro_batch_size == 0, f"{prefix}.global_batch_size",
             self.global_batch_size, f"must be divisible by micro_batch_size ({self.micro_batch_size})")
        s = self.schedule
        rule(out, s.warmup_iters < (s.decay_iters or self.train_iters), f"{prefix}.schedule.warmup_iters",
             s.warmup_iters, "must be smaller than the decay iterations (decay_iters or train_iters)")
        rule(out, s.style != "wsd" or s.wsd_decay_iters is not None, f"{prefix}.schedule.wsd_decay_iters",
             s.wsd_decay_iters, "required when style=wsd")
        rule(out, s.wsd_decay_iters is None or s.wsd_decay_iters <= (s.decay_iters or self.train_iters),
             f"{prefix}.schedule.wsd_decay_iters", s.wsd_decay_iters, "must not exceed the decay iterations")
        o = self.optimizer
        rule(out, o.lr is None or o.min_lr is None or o.min_lr <= o.lr, f"{prefix}.optimizer.min_lr", o.min_lr,
             f"must not exceed lr ({o.lr})")
        parts = self.split.split(",")
        ok = len(parts) == 3 and all(p.strip().replace(".", "", 1).isdigit() for p in parts)
        rule(out, ok and sum(float(p) for p in parts) > 0, f"{prefix}.split", self.split,
             "expected three non-negative numbers such as 98,2,0")
        rule(out, self.eval_interval is None or (ok and float(parts[1]) > 0), f"{prefix}.eval_interval",
             self.eval_interval, "needs a validation share in split")
        ends = [p.until_tokens for p in self.phases]
        rule(out, all(e is not None for e in ends[:-1]), f"{prefix}.phases", ends,
             "every phase but the last needs until_tokens")
        known = [e for e in ends[:-1] if e is not None]
        rule(out, known == sorted(set(known)), f"{prefix}.phases", ends, "until_tokens must increase from phase to phase")
        return out
