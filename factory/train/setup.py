"""Setting up a training run: where it starts, its learning rates, model + optimizer + schedule, and data.

A run starts from one of three points: its own latest checkpoint (a resume: model, optimizer, schedule,
data position and RNG come back), another run's checkpoint (cpt: `cpt.init_from`, weights and optionally
the optimizer), or the model config (pretrain from scratch).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from factory.config_base import model_parallel_problems
from factory.errors import CheckpointError, ConfigError
from factory.model.build import build_gpt_model
from factory.model.config import ModelConfig
from factory.model.execution import decide_for
from factory.runtime.config import ParallelConfig
from factory.train import checkpoint as ckpt
from factory.train.checkpoint_root import iteration_of
from factory.train.config import TrainConfig
from factory.train.data import identity_problems
from factory.train.state import TrainState

if TYPE_CHECKING:  # for annotations only
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import MegatronOptimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.transformer import TransformerConfig

    from factory.runtime.runtime import Runtime

log = logging.getLogger("factory.train")


@dataclass(frozen=True)
class StartPoint:
    """The model a run trains and the checkpoint it loads first."""

    model: ModelConfig
    source: ckpt.CheckpointInfo | None
    """Checkpoint to load: the run's own (resuming) or another run's (continuing); None from scratch."""
    resuming: bool


def start_point(stage: str, train_config: TrainConfig, model: ModelConfig | None, parallel: ParallelConfig,
                ckpt_root: Path, default_source: Path) -> StartPoint:
    """Resume from the newest intact iteration when `ckpt_root` holds a checkpoint (after `checkpoint.recover`;
    sizes checked here, checksums as `restore` reads); else cpt continues `init_from`, pretrain starts fresh."""
    if ckpt_root.is_dir() and (any(ckpt_root.glob("iter_*")) or (ckpt_root / ckpt.TRACKER).exists()):
        info = ckpt.read_info(ckpt.newest_intact(ckpt_root, checksums=False))
        if stage == "pretrain" and model is not None:
            check_same_model(model, info)
        point = StartPoint(info.model, info, resuming=True)
    elif stage == "cpt":
        info = ckpt.read_info(train_config.init_from or default_source)
        point = StartPoint(info.model, info, resuming=False)
    elif model is None:
        raise ConfigError("pretrain: the config has no 'model' section")
    else:
        point = StartPoint(model, None, resuming=False)
    problems = model_parallel_problems(point.model, parallel)
    if problems:
        raise ConfigError(problems)
    return point


def check_same_model(model: ModelConfig, info: ckpt.CheckpointInfo) -> None:
    ours, theirs = model.model_dump(), info.model.model_dump()
    diffs = [f"model.{k}: config {ours[k]!r} vs checkpoint {theirs[k]!r}" for k in ours if ours[k] != theirs.get(k)]
    if diffs:
        raise CheckpointError("\n".join([f"{info.path}: checkpoint was written for another model"] + diffs))


def learning_rates(stage: str, train_config: TrainConfig, start: StartPoint) -> tuple[float, float]:
    """(peak, min) LR: a resume keeps its run's range; a new run takes the config's, or inherits the
    starting checkpoint's last LR as its peak (cpt after upcycling)."""
    if start.resuming:
        peak, low = start.source.meta.peak_lr, start.source.meta.min_lr
        if peak is None or low is None:
            raise CheckpointError(f"{start.source.path}: records no peak and minimum LR to resume with")
        for key, asked, kept in (("lr", train_config.optimizer.lr, peak), ("min_lr", train_config.optimizer.min_lr, low)):
            if asked is not None and asked != kept:
                log.warning("%s.optimizer.%s=%g differs from the resumed run's %g; the run keeps %g (a new "
                            "schedule is a cpt from this checkpoint)", stage, key, asked, kept, kept)
        return peak, low
    lr = train_config.optimizer.lr
    if lr is None:
        lr = start.source.meta.final_lr if start.source is not None else None
        if not lr:
            raise ConfigError(f"{stage}.optimizer.lr: not set, and the starting checkpoint "
                              "records no final learning rate to inherit")
        log.info("%s: peak LR %.3e inherited from the starting checkpoint's last LR", stage, lr)
    min_lr = train_config.optimizer.min_lr if train_config.optimizer.min_lr is not None else float(lr) / 10
    if min_lr > float(lr):
        raise ConfigError(f"{stage}.optimizer.min_lr={min_lr}: exceeds the peak LR {lr}")
    return float(lr), min_lr


def micro_batches_per_rank(stage: str, train_config: TrainConfig, data_parallel_size: int) -> int:
    per_step = train_config.micro_batch_size * data_parallel_size
    if train_config.global_batch_size % per_step:
        raise ConfigError(f"{stage}.global_batch_size={train_config.global_batch_size}: must be divisible by "
                          f"micro_batch_size x data-parallel size ({train_config.micro_batch_size} x "
                          f"{data_parallel_size})")
    return train_config.global_batch_size // per_step


def load_tokenizer(stage: str, tokenizer_dir: Path, model: ModelConfig):
    """Megatron's view of the SentencePiece tokenizer (EOD id for the datasets); checked against the vocab."""
    from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer

    path = tokenizer_dir / "tokenizer.model"
    if not path.is_file():
        raise ConfigError(f"{stage}.tokenizer_dir: {path} not found (run the tokenizer stage first)")
    try:
        tokenizer = SentencePieceMegatronTokenizer(path)
    except (OSError, RuntimeError, ValueError) as e:  # SentencePiece reports a damaged file as RuntimeError
        raise ConfigError(f"{stage}.tokenizer_dir: cannot use tokenizer {path}: {e}") from None
    if tokenizer.vocab_size > model.vocab_size:
        raise ConfigError(f"model.vocab_size={model.vocab_size}: smaller than the tokenizer's "
                          f"{tokenizer.vocab_size} pieces ({path})")
    return tokenizer, path


CALL_TIME_HOOKS = ("finalize_model_grads_func", "grad_scale_func", "no_sync_func", "grad_sync_func")
"""The only TransformerConfig fields set after the model is built. Megatron's schedules read them from the
config at every forward-backward call (pipeline_parallel/schedules.py) and no module copies them when it is
constructed; they are methods of the DDP wrapper and the optimizer, which need the built model."""


def build_model(model_cfg: ModelConfig, runtime: Runtime, train_config: TrainConfig, lr: float,
                min_lr: float) -> tuple[GPTModel, DistributedDataParallel, MegatronOptimizer]:
    """(GPTModel, its DDP wrapper, Megatron optimizer) as the execution decision says: distributed optimizer
    where the runtime supports it, data-parallel communication overlapped where it pays."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    opt = train_config.optimizer
    execution = train_config.execution()
    decision = decide_for(model_cfg, runtime, execution)
    log.info("%s; %s; %s", decision.describe_precision(), decision.describe_fusions(), decision.describe_overlap())
    with runtime.compute_context():
        model = build_gpt_model(model_cfg, runtime, execution=execution)
        ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(**decision.ddp_fields()), model)
        optimizer = get_megatron_optimizer(OptimizerConfig(
            optimizer="adam", lr=lr, min_lr=min_lr, weight_decay=opt.weight_decay, adam_beta1=opt.adam_beta1,
            adam_beta2=opt.adam_beta2, adam_eps=opt.adam_eps, clip_grad=opt.clip_grad,
            bf16=runtime.dtype == torch.bfloat16, params_dtype=runtime.dtype,
            use_distributed_optimizer=decision.distributed_optimizer), [ddp])
        set_call_time_hooks(model.config, ddp, optimizer)
    return model, ddp, optimizer


def set_call_time_hooks(config: TransformerConfig, ddp: DistributedDataParallel, optimizer: MegatronOptimizer) -> None:
    """The schedules' hooks (as Megatron-LM's training.py wires them): gradients are finalized after the last
    micro-batch; with overlapped reduction, DDP's `no_sync` keeps every micro-batch but the last from starting
    it, and `start_grad_sync` lets a pipeline schedule start it as soon as its last backward ends."""
    from megatron.core.distributed.finalize_model_grads import finalize_model_grads

    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    if ddp.ddp_config.overlap_grad_reduce:
        config.no_sync_func = ddp.no_sync
        config.grad_sync_func = ddp.start_grad_sync


@contextlib.contextmanager
def parameters_gathered(ddp: DistributedDataParallel) -> Iterator[None]:
    """With overlapped parameter all-gather, the last optimizer step's all-gathers finish only as the next
    forward reaches each bucket: a save or an evaluation first completes them (and runs without the hooks)."""
    if not ddp.ddp_config.overlap_param_gather:
        yield
        return
    ddp.disable_forward_pre_hook()  # finishes the pending all-gathers
    try:
        yield
    finally:
        ddp.enable_forward_pre_hook()


def build_scheduler(optimizer: MegatronOptimizer, train_config: TrainConfig, lr: float,
                    min_lr: float) -> OptimizerParamScheduler:
    """Megatron's OptimizerParamScheduler for `train_config.schedule`, stepped once per iteration."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    s, wd = train_config.schedule, train_config.optimizer.weight_decay
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=lr, min_lr=min_lr, lr_warmup_steps=s.warmup_iters,
        lr_decay_steps=s.decay_iters or train_config.train_iters,
        lr_decay_style={"wsd": "WSD"}.get(s.style, s.style), start_wd=wd, end_wd=wd,
        wd_incr_steps=train_config.train_iters, wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=False, override_opt_param_scheduler=True,
        wsd_decay_steps=s.wsd_decay_iters, lr_wsd_decay_style=s.wsd_decay_style)


def restore(stage: str, start: StartPoint, model: GPTModel, optimizer: MegatronOptimizer,
            scheduler: OptimizerParamScheduler, runtime: Runtime, *, keep_optimizer: bool, lr: float,
            min_lr: float) -> TrainState:
    """Load the start point's checkpoint into the built objects; returns where the run stands."""
    if start.source is None:
        return TrainState()
    if start.resuming:
        info = _load_newest_intact(start.source.path, model, optimizer, runtime)
        scheduler.load_state_dict(info.scheduler)
        log.info("%s: resuming at iteration %d (%d samples consumed)", stage, info.iteration,
                 info.meta.consumed_samples)
        return TrainState.resumed(info.iteration, info.meta)
    source = start.source
    ckpt.load(source.path, model, runtime, optimizer=optimizer if keep_optimizer else None, restore_rng=False)
    if keep_optimizer:
        for group in optimizer.param_groups:  # the new run's LR range from here on
            group.update(max_lr=lr, min_lr=min_lr)
    else:
        optimizer.reload_model_params()
    log.info("%s: starting from %s (%s optimizer state)", stage, source.path, "keeping" if keep_optimizer else "fresh")
    return TrainState.started_from(source.meta, str(source.path), source.iteration)


def _load_newest_intact(path: Path, model: GPTModel, optimizer: MegatronOptimizer,
                        runtime: Runtime) -> ckpt.CheckpointInfo:
    """Load the run's own checkpoint at `path`; one whose bytes turn out damaged while they are read gives way to
    the next intact iteration below it (with a warning naming the file), as far as one is left."""
    while True:
        try:
            return ckpt.load(path, model, runtime, optimizer=optimizer)
        except ckpt.DamagedCheckpoint as e:
            log.warning("checkpoint: %s; falling back to the previous iteration", e.lines()[0])
            path = ckpt.newest_intact(path.parent, checksums=False, below=iteration_of(path))


def check_resumed_data(stage: str, start: StartPoint, current: dict, boundary_matches: bool | None = None) -> None:
    """Refuse a resume whose data identity differs from the checkpoint's (blend, phase, seed, split, sequence
    length; or a train_iters whose dataset no longer ends the consumed samples with the same batch)."""
    if not start.resuming:
        return
    saved = start.source.meta.data
    if not saved:
        log.warning("%s: %s records no data identity (an older checkpoint); resuming without checking it",
                    stage, start.source.path)
        return
    problems = identity_problems(saved, current, True if boundary_matches is None else boundary_matches)
    if problems:
        raise ConfigError([f"{stage}: resuming {start.source.path} (consumed_samples "
                           f"{start.source.meta.consumed_samples}) would read other samples than the run it continues:"]
                          + [f"  {p}" for p in problems]
                          + [f"  restore the config, or continue these weights on the new data with cpt "
                             f"(cpt.init_from={start.source.path})"])
