"""The training engine behind `pretrain` and `cpt`: megatron.core model, DDP, optimizer, schedules.

One loop serves both stages. A run resumes by itself when its checkpoint folder already holds a
checkpoint (model, optimizer, LR schedule, data position and RNG come back); otherwise pretrain
starts from the model config and cpt from `cpt.init_from`.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factory.config import FactoryConfig, model_parallel_problems
from factory.errors import CheckpointError, ConfigError, FactoryError
from factory.manifest import RunManifest
from factory.model.config import ModelConfig
from factory.train import checkpoint as ckpt
from factory.train.config import TrainConfig
from factory.train.data import build_datasets, micro_batches, read_blend
from factory.train.fault import EXIT_RESTART, SlowdownDetector, Watchdog
from factory.train.flops import flops_per_token
from factory.train.metrics import MetricsWriter, format_line
from factory.train.moe_stats import ExpertLoad, imbalance
from factory.train.step import make_forward_step
from factory.train.stop import STOP_SIGNALS, received_while_starting

log = logging.getLogger("factory.train")


class TrainingInterrupted(FactoryError):
    """Stopped by SIGTERM/SIGUSR1 after saving a checkpoint; rerun the same command to resume."""

    exit_code = 0
    label = "stopped"


class PlannedRestart(FactoryError):
    """Stopped for a planned restart (age or slowdown) after saving; the launcher starts it again."""

    exit_code = EXIT_RESTART
    label = "restart"


@dataclass
class Progress:
    """Where the run is; saved in each checkpoint's `factory` metadata."""

    iteration: int = 0
    consumed_samples: int = 0
    tokens_before: int = 0
    """Tokens the starting checkpoint had seen (its lineage)."""
    lineage: list[dict[str, Any]] = field(default_factory=list)

    def meta(self, stage: str, tokens_per_iter: int, lr: float, phase: str) -> dict[str, Any]:
        return {"stage": stage, "consumed_samples": self.consumed_samples,
                "tokens_seen": self.tokens_before + self.iteration * tokens_per_iter,
                "final_lr": lr, "phase": phase, "lineage": self.lineage}


def output_dir(cfg: FactoryConfig, stage: str) -> Path:
    return getattr(cfg, stage).output_dir or cfg.stage_dir(stage)


def train(cfg: FactoryConfig, stage: str, manifest: RunManifest) -> dict[str, Any]:
    """Run (or resume) the `stage` section's training; returns the manifest metrics."""
    from factory.runtime.runtime import runtime_session

    tc: TrainConfig = getattr(cfg, stage)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        return _Trainer(cfg, stage, tc, rt, manifest).run()


class _Trainer:
    def __init__(self, cfg: FactoryConfig, stage: str, tc: TrainConfig, rt, manifest: RunManifest):
        self.cfg, self.stage, self.tc, self.rt, self.manifest = cfg, stage, tc, rt, manifest
        self.out = output_dir(cfg, stage)
        self.ckpt_root = self.out / "checkpoints"
        self.stop_requested = False

    # --- setup ---------------------------------------------------------------------------------
    def _starting_point(self) -> tuple[ModelConfig, ckpt.CheckpointInfo | None, bool]:
        """(model config, checkpoint to load, whether it is our own run's resume point)."""
        if ckpt.latest_iteration(self.ckpt_root) is not None:
            info = ckpt.read_info(self.ckpt_root)
            if self.stage == "pretrain" and self.cfg.model is not None:
                _check_same_model(self.cfg.model, info)
            return info.model, info, True
        if self.stage == "cpt":
            source = self.tc.init_from or self.cfg.stage_dir("pretrain") / "checkpoints"
            info = ckpt.read_info(source)
            return info.model, info, False
        if self.cfg.model is None:
            raise ConfigError("pretrain: the config has no 'model' section")
        return self.cfg.model, None, False

    def _micro_batches_per_rank(self) -> int:
        tc, dp = self.tc, self.rt.data_parallel_size
        if tc.global_batch_size % (tc.micro_batch_size * dp):
            raise ConfigError(f"{self.stage}.global_batch_size={tc.global_batch_size}: must be divisible by "
                              f"micro_batch_size x data-parallel size ({tc.micro_batch_size} x {dp})")
        return tc.global_batch_size // (tc.micro_batch_size * dp)

    def _tokenizer(self, model_cfg: ModelConfig):
        from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer

        path = (self.tc.tokenizer_dir or self.cfg.stage_dir("tokenizer")) / "tokenizer.model"
        if not path.is_file():
            raise ConfigError(f"{self.stage}.tokenizer_dir: {path} not found (run the tokenizer stage first)")
        tok = SentencePieceMegatronTokenizer(path)
        if tok.vocab_size > model_cfg.vocab_size:
            raise ConfigError(f"model.vocab_size={model_cfg.vocab_size}: smaller than the tokenizer's "
                              f"{tok.vocab_size} pieces ({path})")
        return tok, path

    def _build(self, model_cfg: ModelConfig, lr: float, min_lr: float):
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed.finalize_model_grads import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        from factory.model.build import build_gpt_model

        rt, oc = self.rt, self.tc.optimizer
        distributed = oc.distributed and rt.supports_distributed_optimizer
        with rt.compute_context():
            model = build_gpt_model(model_cfg, rt)
            model.config.calculate_per_token_loss = True
            model.config.finalize_model_grads_func = finalize_model_grads
            ddp = DistributedDataParallel(
                model.config, DistributedDataParallelConfig(
                    grad_reduce_in_fp32=True, use_distributed_optimizer=distributed), model)
            optimizer = get_megatron_optimizer(OptimizerConfig(
                optimizer="adam", lr=lr, min_lr=min_lr, weight_decay=oc.weight_decay,
                adam_beta1=oc.adam_beta1, adam_beta2=oc.adam_beta2, adam_eps=oc.adam_eps,
                clip_grad=oc.clip_grad, bf16=rt.dtype == torch.bfloat16, params_dtype=rt.dtype,
                use_distributed_optimizer=distributed), [ddp])
            model.config.grad_scale_func = optimizer.scale_loss
        return model, ddp, optimizer

    def _learning_rates(self, source: ckpt.CheckpointInfo | None) -> None:
        lr = self.tc.optimizer.lr
        if lr is None:
            lr = source.factory.get("final_lr") if source is not None else None
            if not lr:
                raise ConfigError(f"{self.stage}.optimizer.lr: not set, and the starting checkpoint "
                                  "records no final learning rate to inherit")
            log.info("%s: peak LR %.3e inherited from the starting checkpoint's last LR", self.stage, lr)
        self.lr = float(lr)
        self.min_lr = self.tc.optimizer.min_lr if self.tc.optimizer.min_lr is not None else self.lr / 10
        if self.min_lr > self.lr:
            raise ConfigError(f"{self.stage}.optimizer.min_lr={self.min_lr}: exceeds the peak LR {self.lr}")

    # --- run -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        rt, tc = self.rt, self.tc
        model_cfg, source, resuming = self._starting_point()
        problems = model_parallel_problems(model_cfg, self.cfg.parallel)
        if problems:
            raise ConfigError(problems)
        rt.check_model(model_cfg)
        if resuming:  # the run's LR range was fixed when it started
            self.lr, self.min_lr = source.factory["peak_lr"], source.factory["min_lr"]
        else:
            self._learning_rates(source)
        keep_optimizer = source is not None and not resuming and not tc.reset_optimizer
        self.n_micro = self._micro_batches_per_rank()
        tokenizer, tok_path = self._tokenizer(model_cfg)
        blend_path = tc.blend_file or self.cfg.stage_dir("pack") / "blend.json"
        blend = read_blend(blend_path, tc.phase)
        self.manifest.add_input(tok_path, role="tokenizer")
        self.manifest.add_input(blend_path, role="blend")

        # Megatron matches saved optimizer param groups by their LR settings: build with the source's.
        if keep_optimizer:
            model, ddp, optimizer = self._build(model_cfg, source.factory.get("peak_lr", self.lr),
                                                source.factory.get("min_lr", self.min_lr))
        else:
            model, ddp, optimizer = self._build(model_cfg, self.lr, self.min_lr)
        scheduler = build_scheduler(optimizer, tc, self.lr, self.min_lr)
        progress = Progress()
        if resuming:
            info = ckpt.load(self.ckpt_root, model, rt, optimizer=optimizer)
            scheduler.load_state_dict(info.scheduler)
            progress = Progress(iteration=info.iteration, consumed_samples=info.consumed_samples,
                                tokens_before=int(info.factory.get("tokens_before", 0)),
                                lineage=list(info.factory.get("lineage", [])))
            log.info("%s: resuming at iteration %d (%d samples consumed)", self.stage, info.iteration,
                     info.consumed_samples)
        elif source is not None:
            ckpt.load(source.path, model, rt, optimizer=optimizer if keep_optimizer else None, restore_rng=False)
            if keep_optimizer:
                for group in optimizer.param_groups:  # the new run's LR range from here on
                    group.update(max_lr=self.lr, min_lr=self.min_lr)
            else:
                optimizer.reload_model_params()
            progress.tokens_before = int(source.factory.get("tokens_seen", 0))
            progress.lineage = list(source.factory.get("lineage", [])) + [
                {"stage": source.factory.get("stage", "?"), "checkpoint": str(source.path),
                 "tokens_seen": progress.tokens_before, **({"upcycle": source.factory["upcycle"]}
                                                           if "upcycle" in source.factory else {})}]
            self.manifest.add_input(source.path, role="init_checkpoint")
            log.info("%s: starting from %s (%s optimizer state)", self.stage, source.path,
                     "keeping" if keep_optimizer else "fresh")

        seq = model_cfg.seq_length
        seed = tc.seed if tc.seed is not None else self.cfg.runtime.seed
        valid_samples = tc.eval_iters * tc.global_batch_size if tc.eval_interval else 0
        train_ds, valid_ds, _ = build_datasets(
            blend, tokenizer, seq, tc.split, seed, (tc.train_iters * tc.global_batch_size, valid_samples, 0),
            self.out / "data_cache")
        writer = MetricsWriter(self.out, rt.is_main, tc.tensorboard, tc.wandb_project,
                               self.cfg.run.name, self.cfg.to_dict())
        writer.truncate_after(progress.iteration)
        loop = _Loop(self, model, ddp, optimizer, scheduler, train_ds, valid_ds, writer, model_cfg, blend.name)
        try:
            summary = loop.run(progress)
        finally:
            writer.close()
            loop.expert_load.close()
        self.manifest.add_output(self.ckpt_root)
        return summary

    def save(self, model, optimizer, scheduler, progress: Progress, model_cfg: ModelConfig, phase: str) -> None:
        tc = self.tc
        meta = progress.meta(self.stage, tc.global_batch_size * model_cfg.seq_length,
                             scheduler.get_lr(optimizer.param_groups[0]), phase)
        meta.update(peak_lr=self.lr, min_lr=self.min_lr, tokens_before=progress.tokens_before)
        ckpt.save(self.ckpt_root, progress.iteration, model, model_cfg, self.rt, optimizer=optimizer,
                  scheduler=scheduler, meta=meta, keep_last=tc.checkpoint.keep_last,
                  keep_every=tc.checkpoint.keep_every)


class _Loop:
    """Iterations: forward-backward through Megatron's schedule, optimizer step, logs, checkpoints."""

    def __init__(self, trainer: _Trainer, model, ddp, optimizer, scheduler, train_ds, valid_ds,
                 writer: MetricsWriter, model_cfg: ModelConfig, phase: str):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self.t, self.model, self.ddp, self.optimizer, self.scheduler = trainer, model, ddp, optimizer, scheduler
        self.train_ds, self.valid_ds, self.writer = train_ds, valid_ds, writer
        self.model_cfg, self.phase = model_cfg, phase
        self.fb = get_forward_backward_func()
        self.step_fn = make_forward_step(trainer.tc.z_loss_coeff, trainer.rt.device)
        self.expert_load = ExpertLoad(model)
        self.flops_per_token = flops_per_token(model_cfg)
        self.tokens_per_iter = trainer.tc.global_batch_size * model_cfg.seq_length

    def _batches(self, dataset, start: int):
        from megatron.core import parallel_state

        tc = self.t.tc
        return micro_batches(dataset, start, tc.micro_batch_size, parallel_state.get_data_parallel_rank(),
                             self.t.rt.data_parallel_size, self.t.n_micro)

    def _forward_backward(self, dataset, start: int, forward_only: bool) -> dict[str, float]:
        tc = self.t.tc
        losses = self.fb(forward_step_func=self.step_fn, data_iterator=self._batches(dataset, start),
                         model=[self.ddp], num_microbatches=self.t.n_micro, seq_length=self.model_cfg.seq_length,
                         micro_batch_size=tc.micro_batch_size, forward_only=forward_only)
        return _reduce_losses(losses, self.t.rt.device)

    def train_step(self, progress: Progress) -> dict[str, float]:
        rt = self.t.rt
        with rt.compute_context():
            self.ddp.zero_grad_buffer()
            self.optimizer.zero_grad()
            losses = self._forward_backward(self.train_ds, progress.consumed_samples, forward_only=False)
            updated, grad_norm, _ = self.optimizer.step()
        if updated:
            self.scheduler.step(increment=1)
        progress.iteration += 1
        progress.consumed_samples += self.t.tc.global_batch_size
        return {**losses, "grad_norm": float(grad_norm or 0.0), "skipped": not updated}

    def evaluate(self) -> float:
        self.model.eval()
        totals: dict[str, float] = {}
        with torch.no_grad(), self.t.rt.compute_context():
            for j in range(self.t.tc.eval_iters):
                losses = self._forward_backward(self.valid_ds, j * self.t.tc.global_batch_size, forward_only=True)
                totals["loss"] = totals.get("loss", 0.0) + losses["loss"]
        self.model.train()
        self.expert_load.take()  # evaluation traffic is not training load
        return totals["loss"] / self.t.tc.eval_iters

    def run(self, progress: Progress) -> dict[str, Any]:
        t, tc, rt = self.t, self.t.tc, self.t.rt
        fault = tc.fault
        previous = {s: signal.signal(s, self._request_stop) for s in STOP_SIGNALS}
        t.stop_requested = t.stop_requested or received_while_starting()
        watchdog = Watchdog(60 * fault.hang_timeout_minutes).start() if fault.hang_timeout_minutes else None
        slowdown = (SlowdownDetector(fault.restart_on_slowdown, 60 * fault.slowdown_minutes)
                    if fault.restart_on_slowdown else None)
        started = time.monotonic()
        self.model.train()
        start_iter = progress.iteration
        window_start, window_iters = time.perf_counter(), 0
        tokens_per_s: list[float] = []
        last: dict[str, Any] = {}
        peak = rt.peak_flops()
        bar = _progress_bar(rt.is_main, tc.train_iters, progress.iteration)
        try:
            while progress.iteration < tc.train_iters:
                step = self.train_step(progress)
                if watchdog:
                    watchdog.beat()
                window_iters += 1
                bar.update(progress.iteration)
                done = progress.iteration == tc.train_iters
                restart_reason = None
                if progress.iteration % tc.log_interval == 0 or done:
                    rt.synchronize()
                    elapsed = time.perf_counter() - window_start
                    tps = window_iters * self.tokens_per_iter / elapsed
                    tokens_per_s.append(tps)
                    record = self._record(step, progress, tps, peak)
                    if tc.eval_interval and (progress.iteration % tc.eval_interval == 0 or done):
                        record["valid_loss"] = self.evaluate()
                    if rt.is_main:
                        self.writer.write(record)
                        bar.log(format_line(record, tc.train_iters))
                    last = record
                    if slowdown and slowdown.update(tps, time.monotonic()):
                        restart_reason = (f"tokens/s {tps:,.0f} stayed {fault.restart_on_slowdown:.0%} below the "
                                          f"baseline {slowdown.baseline:,.0f} for {fault.slowdown_minutes} min")
                    window_start, window_iters = time.perf_counter(), 0
                if fault.restart_every_hours and time.monotonic() - started >= 3600 * fault.restart_every_hours:
                    restart_reason = f"planned restart after {fault.restart_every_hours} h"
                interval = tc.checkpoint.save_interval
                saving = done or bool(interval and progress.iteration % interval == 0)
                stop, restart = self._agreed(restart_reason is not None)
                if saving or stop or restart:
                    save_start = time.perf_counter()
                    t.save(self.model, self.optimizer, self.scheduler, progress, self.model_cfg, self.phase)
                    window_start += time.perf_counter() - save_start  # throughput excludes checkpoint writes
                    if watchdog:
                        watchdog.beat()
                if done:
                    break
                where = f"at iteration {progress.iteration}; checkpoint saved to {t.ckpt_root}"
                if stop:
                    raise TrainingInterrupted(f"{t.stage}: stopped by signal {where}; rerun the same command to resume")
                if restart:
                    raise PlannedRestart(f"{t.stage}: {restart_reason or 'restart requested by another rank'} "
                                         f"{where}; exit {EXIT_RESTART} asks the launcher to start it again")
        finally:
            bar.close()
            if watchdog:
                watchdog.stop()
            for s, handler in previous.items():  # once stopping, late duplicates must not kill the exit
                signal.signal(s, signal.SIG_IGN if t.stop_requested else handler)
        return _summary(last, tokens_per_s, progress, start_iter, self.tokens_per_iter)

    def _record(self, step: dict, progress: Progress, tps: float, peak: float | None) -> dict[str, Any]:
        """The metrics record of a log window."""
        flops = tps * self.flops_per_token / self.t.rt.world_size
        record = {"iteration": progress.iteration, "loss": step["loss"],
                  "lr": self.scheduler.get_lr(self.optimizer.param_groups[0]),
                  "grad_norm": step["grad_norm"], "tokens_per_s": tps, "tflops": flops / 1e12,
                  "mfu": flops / peak if peak else None,
                  "tokens": progress.tokens_before + progress.iteration * self.tokens_per_iter}
        if "z_loss" in step:
            record["z_loss"] = step["z_loss"]
        load = self.expert_load.take()
        if load:
            per_layer = {layer: imbalance(c) for layer, c in load.items()}
            record["moe_max_imbalance"] = max(per_layer.values())
            record["moe_imbalance"] = per_layer
            record["moe_tokens_per_expert"] = load
        return record

    def _request_stop(self, signum, frame) -> None:
        log.warning("received %s: saving a checkpoint after this iteration", signal.Signals(signum).name)
        self.t.stop_requested = True

    def _agreed(self, restart_here: bool) -> tuple[bool, bool]:
        """(stop, restart) as any rank wants it: all ranks must save and leave together."""
        flags = torch.tensor([float(self.t.stop_requested), float(restart_here)], device=self.t.rt.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())


def build_scheduler(optimizer, tc: TrainConfig, lr: float, min_lr: float):
    """Megatron's OptimizerParamScheduler for `tc.schedule`, stepped once per iteration."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    s, wd = tc.schedule, tc.optimizer.weight_decay
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=lr, min_lr=min_lr, lr_warmup_steps=s.warmup_iters,
        lr_decay_steps=s.decay_iters or tc.train_iters, lr_decay_style={"wsd": "WSD"}.get(s.style, s.style),
        start_wd=wd, end_wd=wd, wd_incr_steps=tc.train_iters, wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=False, override_opt_param_scheduler=True,
        wsd_decay_steps=s.wsd_decay_iters, lr_wsd_decay_style=s.wsd_decay_style)


def _reduce_losses(losses: list[dict], device: torch.device) -> dict[str, float]:
    """Per-token means of the logged loss sums over micro-batches and data-parallel replicas.

    Only last-stage, tensor-rank-0 processes hold a copy that counts; every rank gets the result.
    """
    from megatron.core import parallel_state

    names = ["lm loss", "z loss"]
    sums = torch.zeros(2 * len(names), dtype=torch.float64, device=device)
    counts_here = parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
    if counts_here:
        for entry in losses:
            for i, name in enumerate(names):
                if name in entry:
                    sums[2 * i: 2 * i + 2] += entry[name].to(device=device, dtype=torch.float64)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    out = {"loss": (sums[0] / sums[1]).item()}
    if sums[3] > 0:
        out["z_loss"] = (sums[2] / sums[3]).item()
    return out


def _summary(last: dict, tokens_per_s: list[float], progress: Progress, start_iter: int,
             tokens_per_iter: int) -> dict[str, Any]:
    steady = tokens_per_s[1:] or tokens_per_s  # the first window includes warm-up
    out = {"final_loss": last.get("loss"), "final_valid_loss": last.get("valid_loss"),
           "steps": progress.iteration, "steps_this_run": progress.iteration - start_iter,
           "tokens_seen": progress.iteration * tokens_per_iter,
           "tokens_seen_total": progress.tokens_before + progress.iteration * tokens_per_iter,
           "mean_tokens_per_s": sum(steady) / len(steady) if steady else None,
           "final_lr": last.get("lr")}
    if last.get("mfu") is not None:
        out["mfu"] = last["mfu"]
    if "moe_imbalance" in last:
        out["moe_imbalance"] = last["moe_imbalance"]
    return out


def _check_same_model(model: ModelConfig, info: ckpt.CheckpointInfo) -> None:
    ours, theirs = model.model_dump(), info.model.model_dump()
    diffs = [f"model.{k}: config {ours[k]!r} vs checkpoint {theirs[k]!r}" for k in ours if ours[k] != theirs.get(k)]
    if diffs:
        raise CheckpointError("\n".join([f"{info.path}: checkpoint was written for another model"] + diffs))


class _progress_bar:
    """A rich progress bar on an interactive rank-0 terminal; plain log lines otherwise."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.progress = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.progress = Progress("[progress.description]{task.description}", BarColumn(),
                                     MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task("training", total=total, completed=done)
            self.progress.start()

    def update(self, done: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def log(self, line: str) -> None:
        log.info(line)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
