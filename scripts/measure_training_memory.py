"""Measured peak memory of real training steps next to the memory plan's estimate, per rank.

    MALLOC_MMAP_THRESHOLD_=65536 torchrun --standalone --nproc-per-node 2 scripts/measure_training_memory.py \
        [--out DIR] parallel.tensor=2 [model.moe.num_experts=4 ...] [pretrain.micro_batch_size=4]
    MALLOC_MMAP_THRESHOLD_=65536 python scripts/measure_training_memory.py [--out DIR] [OVERRIDES]  # one process

Each rank prints one JSON line (and writes it to DIR/rank-N.json with --out, as ranks' lines may interleave): its pipeline stage, the plan's bytes and the peak resident memory that
building the model, DDP, optimizer and two optimizer steps added (VmHWM after the steps minus VmRSS before
the model; glibc returns large blocks to the system at once under the mmap threshold above, so resident
memory follows live tensors). CPU, fp32.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch

from factory.config import apply_override, validate_config
from factory.process_exit import exit_process
from factory.runtime.config import ParallelConfig

BASE = {
    "run": {"name": "memory", "dir": "/tmp/factory-memory"},
    "runtime": {"device": "cpu", "precision": "fp32"},
    "model": {"num_layers": 4, "hidden_size": 128, "ffn_hidden_size": 512, "num_attention_heads": 4,
              "num_query_groups": 2, "seq_length": 1024, "vocab_size": 8192},
    "pretrain": {"train_iters": 2, "micro_batch_size": 4, "optimizer": {"lr": 1e-3}},
}


def kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def batches(cfg, count: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    seq, mb = cfg.model.seq_length, cfg.pretrain.micro_batch_size
    for _ in range(count):
        tokens = torch.randint(0, cfg.model.vocab_size, (mb, seq + 1), generator=g)
        yield {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(mb, seq),
               "position_ids": torch.arange(seq).expand(mb, seq)}


def fill_global_batch(raw: dict) -> None:
    """Unless an override sets it, the global batch that gives each rank the fewest micro-batches that reach the
    peak: `pipeline` of them. 1F1B holds `pipeline - stage` in flight on stage `stage`; without a pipeline each
    micro-batch's activations are freed in its backward, before the next forward, so further micro-batches repeat
    the same peak (compute, no memory)."""
    train = raw["pretrain"]
    if "global_batch_size" not in train:
        parallel = ParallelConfig.model_validate(raw.get("parallel") or {})
        data_parallel = max(1, int(os.environ.get("WORLD_SIZE", 1)) // parallel.model_parallel_size)
        train["global_batch_size"] = train["micro_batch_size"] * data_parallel * parallel.pipeline


def main(argv: list[str]) -> None:
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from factory.runtime.runtime import runtime_session
    from factory.train import setup
    from factory.train.memory import TrainingShape, plan_memory
    from factory.train.step import make_forward_step

    out, overrides = (Path(argv[1]), argv[2:]) if argv[:1] == ["--out"] else (None, argv)
    raw = copy.deepcopy(BASE)
    for item in overrides:
        apply_override(raw, item)
    fill_global_batch(raw)
    cfg = validate_config(raw)
    train = cfg.pretrain
    with runtime_session(cfg.runtime, cfg.parallel) as runtime:
        micro = setup.micro_batches_per_rank("pretrain", train, runtime.data_parallel_size)
        before = kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        _, ddp, optimizer = setup.build_model(cfg.model, runtime, train, 1e-3, 1e-4)
        step = make_forward_step(train.z_loss_coeff, runtime.device)
        run = get_forward_backward_func()
        for i in range(train.train_iters):
            with runtime.compute_context():
                ddp.zero_grad_buffer()
                optimizer.zero_grad()
                run(forward_step_func=step, data_iterator=batches(cfg, micro, 100 * i + runtime.rank),
                    model=[ddp], num_microbatches=micro, seq_length=cfg.model.seq_length,
                    micro_batch_size=train.micro_batch_size, forward_only=False)
                optimizer.step()
        measured = kib("VmHWM") - before
        shape = TrainingShape(world_size=runtime.world_size, micro_batch_size=train.micro_batch_size,
                              micro_batches=micro, param_bytes=4, distributed_optimizer=False,
                              recompute=train.recompute, z_loss=train.z_loss_coeff > 0)
        stage = parallel_state.get_pipeline_model_parallel_rank()
        estimate = plan_memory(cfg.model, cfg.parallel, shape).stages[stage]
        line = json.dumps({"rank": runtime.rank, "stage": stage, "layout": cfg.parallel.describe(),
                           "estimate": estimate.total, "measured": measured, "parts": estimate.describe()})
        print(line, flush=True)
        if out is not None:
            (out / f"rank-{runtime.rank}.json").write_text(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
    exit_process(0)  # the interpreter's teardown of torch and Megatron costs ~1 CPU-s
