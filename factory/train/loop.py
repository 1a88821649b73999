"""The step loop: forward-backward through Megatron's schedule, optimizer step, evaluation, logs, saves.

`TrainLoop.fit` reads top to bottom: step, then (on their own intervals) log and evaluate, then ask the
run control whether to stop, then save when due or when stopping.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from factory.model.config import ModelConfig
from factory.train.cadence import Every
from factory.train.checkpointer import Checkpointer
from factory.train.config import TrainConfig
from factory.train.control import RunControl
from factory.train.data import micro_batches
from factory.train.flops import flops_per_token
from factory.train.metrics import MetricsWriter, format_line
from factory.train.moe_stats import ExpertLoad, imbalance
from factory.train.phases import Phase, phase_at, position
from factory.train.setup import parameters_gathered
from factory.train.state import TrainState
from factory.train.step import make_forward_step

log = logging.getLogger("factory.train")


@dataclass
class TrainParts:
    """What the loop drives, built by factory/train/engine.py."""

    model: Any
    ddp: Any
    optimizer: Any
    scheduler: Any
    phases: list[Phase]
    """The run's blend phases, each with its training dataset (factory/train/phases.py)."""
    valid_data: Any
    model_cfg: ModelConfig
    micro_batches: int
    """Micro-batches per rank per step."""
    checkpointer: Checkpointer
    """Saves the run's state (factory/train/checkpointer.py)."""


class TrainLoop:
    def __init__(self, train_config: TrainConfig, runtime, parts: TrainParts, metrics: MetricsWriter,
                 control: RunControl):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self.config, self.runtime, self.parts, self.metrics, self.control = (
            train_config, runtime, parts, metrics, control)
        self.forward_backward_func = get_forward_backward_func()
        self.step_fn = make_forward_step(train_config.z_loss_coeff, runtime.device)
        self.expert_load = ExpertLoad(parts.model)
        self.flops_per_token = flops_per_token(parts.model_cfg)
        self.tokens_per_iter = train_config.global_batch_size * parts.model_cfg.seq_length
        self.peak_flops = runtime.peak_flops()
        self.logging = Every(train_config.log_interval, last=train_config.train_iters)
        self.validation = Every(train_config.eval_interval, last=train_config.train_iters)

    def close(self) -> None:
        self.expert_load.close()

    # --- one step ------------------------------------------------------------------------------
    def _forward_backward(self, dataset, start: int, forward_only: bool) -> dict[str, float]:
        from megatron.core import parallel_state

        batches = micro_batches(dataset, start, self.config.micro_batch_size, parallel_state.get_data_parallel_rank(),
                                self.runtime.data_parallel_size, self.parts.micro_batches)
        losses = self.forward_backward_func(
            forward_step_func=self.step_fn, data_iterator=batches, model=[self.parts.ddp],
            num_microbatches=self.parts.micro_batches, seq_length=self.parts.model_cfg.seq_length,
            micro_batch_size=self.config.micro_batch_size, forward_only=forward_only)
        return reduce_losses(losses, self.runtime.device)

    def train_step(self, state: TrainState) -> dict[str, float]:
        parts = self.parts
        with self.runtime.compute_context():
            parts.ddp.zero_grad_buffer()
            parts.optimizer.zero_grad()
            phase = phase_at(parts.phases, state.iteration)
            if state.iteration == phase.start and len(parts.phases) > 1:
                log.info("data: phase %s (%s) for iterations %d..%d", phase.name, phase.blend_path,
                         phase.start + 1, phase.end)
            start = position(phase, state.consumed_samples, self.config.global_batch_size)
            losses = self._forward_backward(phase.dataset, start, forward_only=False)
            updated, grad_norm, _ = parts.optimizer.step()
        if updated:
            parts.scheduler.step(increment=1)
        state.advance(self.config.global_batch_size)
        return {**losses, "grad_norm": float(grad_norm or 0.0), "skipped": not updated}

    def evaluate(self) -> float:
        """Mean loss over `eval_iters` global batches of the validation split (the same batches every time)."""
        self.parts.model.eval()
        total = 0.0
        with torch.no_grad(), self.runtime.compute_context(), parameters_gathered(self.parts.ddp):
            for j in range(self.config.eval_iters):
                start = j * self.config.global_batch_size
                total += self._forward_backward(self.parts.valid_data, start, forward_only=True)["loss"]
        self.parts.model.train()
        self.expert_load.take()  # evaluation traffic is not training load
        return total / self.config.eval_iters

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, state: TrainState, stage: str, ckpt_root: Path) -> dict[str, Any]:
        config = self.config
        self.parts.model.train()
        start_iter = state.iteration
        window_start, window_iters = time.perf_counter(), 0
        tokens_per_s: list[float] = []
        last: dict[str, Any] = {}
        bar = ProgressBar(self.runtime.is_main, config.train_iters, state.iteration)
        checkpointer = self.parts.checkpointer
        try:
            while state.iteration < config.train_iters:
                step = self.train_step(state)
                checkpointer.poll()  # commits a background save every rank has written
                self.control.beat()
                window_iters += 1
                bar.update(state.iteration)
                done = state.iteration == config.train_iters
                due_eval = self.validation.due(state.iteration)
                if self.logging.due(state.iteration) or due_eval:
                    self.runtime.synchronize()
                    tps = window_iters * self.tokens_per_iter / (time.perf_counter() - window_start)
                    tokens_per_s.append(tps)
                    last = self._record(step, state, tps)
                    if due_eval:
                        last["valid_loss"] = self.evaluate()
                    if self.runtime.is_main:
                        self.metrics.write(last)
                        bar.log(format_line(last, config.train_iters))
                    self.control.observe_throughput(tps)
                    window_start, window_iters = time.perf_counter(), 0
                verdict = self.control.verdict()
                if done or verdict.leave or checkpointer.due(state.iteration):
                    with parameters_gathered(self.parts.ddp):  # the updated weights, also under DP overlap
                        waited = checkpointer.save(state, final=done or verdict.leave)
                    window_start += waited  # throughput excludes what the step loop waits for a save
                    self.control.beat()
                if not done and verdict.leave:
                    self.control.raise_for(verdict, stage, state.iteration, ckpt_root)
        except BaseException:
            checkpointer.abandon()
            raise
        finally:
            bar.close()
        return summary(last, tokens_per_s, state, start_iter, self.tokens_per_iter)

    def _record(self, step: dict, state: TrainState, tokens_per_s: float) -> dict[str, Any]:
        """The metrics record of a log window."""
        peak = self.peak_flops
        flops = tokens_per_s * self.flops_per_token / self.runtime.world_size
        optimizer = self.parts.optimizer
        record = {"iteration": state.iteration, "phase": phase_at(self.parts.phases, state.iteration - 1).name,
                  "loss": step["loss"],
                  "lr": self.parts.scheduler.get_lr(optimizer.param_groups[0]), "grad_norm": step["grad_norm"],
                  "tokens_per_s": tokens_per_s, "tflops": flops / 1e12, "mfu": flops / peak if peak else None,
                  "tokens": state.lineage_tokens(self.tokens_per_iter)}
        if "z_loss" in step:
            record["z_loss"] = step["z_loss"]
        load = self.expert_load.take()
        if load:
            per_layer = {layer: imbalance(c) for layer, c in load.items()}
            record["moe_max_imbalance"] = max(per_layer.values())
            record["moe_imbalance"] = per_layer
            record["moe_tokens_per_expert"] = load
        return record


def reduce_losses(losses: list[dict], device: torch.device) -> dict[str, float]:
    """Per-token means of the logged loss sums over micro-batches and data-parallel replicas.

    Only last-stage, tensor-rank-0 processes hold a copy that counts; every rank gets the result.
    """
    from megatron.core import parallel_state

    names = ["lm loss", "z loss"]
    sums = torch.zeros(2 * len(names), dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0:
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


def summary(last: dict, tokens_per_s: list[float], state: TrainState, start_iter: int,
            tokens_per_iter: int) -> dict[str, Any]:
    """The manifest metrics of a run (tokens named as in checkpoint metadata: run_tokens, lineage_tokens)."""
    steady = tokens_per_s[1:] or tokens_per_s  # the first window includes warm-up
    out = {"final_loss": last.get("loss"), "final_valid_loss": last.get("valid_loss"),
           "steps": state.iteration, "steps_this_run": state.iteration - start_iter,
           "run_tokens": state.run_tokens(tokens_per_iter), "lineage_tokens": state.lineage_tokens(tokens_per_iter),
           "mean_tokens_per_s": sum(steady) / len(steady) if steady else None, "final_lr": last.get("lr")}
    if last.get("mfu") is not None:
        out["mfu"] = last["mfu"]
    if "moe_imbalance" in last:
        out["moe_imbalance"] = last["moe_imbalance"]
    return out


class ProgressBar:
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
