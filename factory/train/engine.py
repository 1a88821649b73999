"""The training engine behind `pretrain` and `cpt`: set up, then fit (torchtitan-style components).

`train` reads top to bottom: runtime -> start point and learning rates -> tokenizer and blend phases ->
model, optimizer and schedule -> restore -> datasets -> metrics and run control -> the step loop. A run resumes
by itself when its checkpoint folder already holds a checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import outputs
from factory.config_base import CoreConfig
from factory.manifest import RunManifest
from factory.model.config import ModelConfig
from factory.runtime.runtime import Runtime, runtime_session
from factory.train import checkpoint as ckpt
from factory.train import setup
from factory.train.checkpoint_save import PendingSave
from factory.train.checkpointer import Checkpointer
from factory.train.config import TrainConfig
from factory.train.control import RunControl
from factory.train.loop import TrainLoop, TrainParts
from factory.train.metrics import MetricsWriter
from factory.train.phases import (Phase, build_phase_datasets, data_identity, last_batch_fingerprint, phase_at,
                                  plan_phases)
from factory.train.state import TrainState

log = logging.getLogger("factory.train")


@dataclass(frozen=True)
class StateWriter:
    """Writes a training state as this run's checkpoint: what `Checkpointer` calls when a save is due."""

    root: Path
    stage: str
    model: Any
    model_cfg: ModelConfig
    runtime: Runtime
    optimizer: Any
    scheduler: Any
    phases: list[Phase]
    global_batch_size: int
    peak_lr: float
    min_lr: float

    def __call__(self, current: TrainState, background: bool) -> PendingSave:
        gbs = self.global_batch_size
        current.data["batch"] = last_batch_fingerprint(self.phases, current.iteration, current.consumed_samples, gbs)
        lr_now = self.scheduler.get_lr(self.optimizer.param_groups[0])
        trained_on = phase_at(self.phases, current.iteration - 1).name  # the phase of the last step, as in metrics
        meta = current.meta(self.stage, gbs * self.model_cfg.seq_length, final_lr=lr_now, peak_lr=self.peak_lr,
                            min_lr=self.min_lr, phase=trained_on)
        return ckpt.begin_save(self.root, current.iteration, self.model, self.model_cfg, self.runtime,
                               optimizer=self.optimizer, scheduler=self.scheduler, meta=meta, background=background)


def train(cfg: CoreConfig, stage: str, train_config: TrainConfig, out_dir: Path,
          manifest: RunManifest) -> dict[str, Any]:
    """Run (or resume) `stage` with `train_config`, writing into `out_dir`; returns the manifest metrics."""
    ckpt_root = out_dir / "checkpoints"
    with runtime_session(cfg.runtime, cfg.parallel) as runtime:
        ckpt.recover(ckpt_root, runtime)  # what a killed save left, before anything reads the folder
        start = setup.start_point(stage, train_config, cfg.model, cfg.parallel, ckpt_root,
                                  default_source=outputs.pretrain(cfg).checkpoints)
        runtime.check_model(start.model)
        lr, min_lr = setup.learning_rates(stage, train_config, start)
        n_micro = setup.micro_batches_per_rank(stage, train_config, runtime.data_parallel_size)
        tokenizer, tokenizer_path = setup.load_tokenizer(
            stage, train_config.tokenizer_dir or outputs.tokenizer(cfg).dir, start.model)
        gbs = train_config.global_batch_size
        phases = plan_phases(stage, train_config, outputs.pack(cfg).blend_file, gbs * start.model.seq_length)
        manifest.add_input(tokenizer_path, role="tokenizer")
        for phase in phases:
            manifest.add_input(phase.blend_path, role=f"blend:{phase.name}")
        seed = train_config.seed if train_config.seed is not None else cfg.runtime.seed
        identity = data_identity(phases, seed, train_config.split, start.model.seq_length, gbs)
        setup.check_resumed_data(stage, start, identity)  # before anything is built

        keep_optimizer = start.source is not None and not start.resuming and not train_config.reset_optimizer
        # Megatron matches saved optimizer param groups by their LR settings: build with the source's.
        built_lr = (lr, min_lr)
        if keep_optimizer and start.source.meta.peak_lr is not None:
            built_lr = (start.source.meta.peak_lr, start.source.meta.min_lr)
        model, ddp, optimizer = setup.build_model(start.model, runtime, train_config, *built_lr)
        scheduler = setup.build_scheduler(optimizer, train_config, lr, min_lr)
        state = setup.restore(stage, start, model, optimizer, scheduler, runtime,
                              keep_optimizer=keep_optimizer, lr=lr, min_lr=min_lr)
        if start.source is not None and not start.resuming:
            manifest.add_input(start.source.path, role="init_checkpoint")

        valid_samples = train_config.eval_iters * gbs if train_config.eval_interval else 0
        valid_data = build_phase_datasets(phases, tokenizer, start.model.seq_length, train_config.split, seed, gbs,
                                          valid_samples, out_dir / "data_cache")
        if start.resuming and state.data.get("batch") is not None:
            boundary = last_batch_fingerprint(phases, state.iteration, state.consumed_samples, gbs)
            setup.check_resumed_data(stage, start, identity, boundary == state.data["batch"])
        state.data = identity

        write = StateWriter(ckpt_root, stage, model, start.model, runtime, optimizer, scheduler, phases, gbs,
                            peak_lr=lr, min_lr=min_lr)
        checkpointer = Checkpointer(train_config.checkpoint, write)
        parts = TrainParts(model, ddp, optimizer, scheduler, phases, valid_data, start.model, n_micro, checkpointer)
        metrics = MetricsWriter(out_dir, runtime.is_main, train_config.tensorboard, train_config.wandb_project,
                                cfg.run.name, cfg.to_dict())
        metrics.truncate_after(state.iteration)
        loop = TrainLoop(train_config, runtime, parts, metrics, RunControl(train_config.fault, runtime.device))
        try:
            with loop.control:
                summary = loop.fit(state, stage, ckpt_root)
        finally:
            metrics.close()
            loop.close()
    manifest.add_output(ckpt_root)
    return summary
