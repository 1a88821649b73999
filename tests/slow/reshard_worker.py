"""torchrun worker: checkpoints saved at one parallel layout continue at another, with and without optimizer state.

Usage: torchrun --standalone --nproc-per-node 2 tests/slow/reshard_worker.py OUT_DIR {dense,moe}...

For each source layout the model trains 2 steps, saves (checkpoint.save: model, optimizer, scheduler, RNG) and
trains 2 more: the reference. Every target layout then restores that checkpoint as the training engine does
(setup.restore): as a resume (optimizer state kept; its 2 steps must give the reference's losses) and as a
continuation with fresh optimizer state (its first loss must be the reference's: the same weights; its second
must not: the optimizer state is what the resume carries). One process
group for all layouts and model kinds (Megatron's parallel state is rebuilt per layout), so every matrix together
costs one start-up. Per kind, rank 0 writes OUT_DIR/KIND.json: {"reference": {source: [losses]}, source: {target:
{"resume": [losses], "fresh": [losses]}}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from factory.process_exit import exit_process

LAYOUTS = {"dense": {"DP2": {}, "TP2": {"tensor": 2}, "PP2": {"pipeline": 2}},
           "moe": {"DP2": {}, "EP2": {"expert": 2}, "PP2": {"pipeline": 2}}}
TRAIN = {"train_iters": 4, "global_batch_size": 4, "micro_batch_size": 1, "optimizer": {"lr": 1e-2, "min_lr": 1e-3},
         "schedule": {"style": "cosine", "warmup_iters": 1}}


def _dataset(cfg, samples: int = 16) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    seq = cfg.model.seq_length
    tokens = torch.randint(0, cfg.model.vocab_size, (samples, seq + 1), generator=gen)
    return [{"tokens": t[:-1], "labels": t[1:], "loss_mask": torch.ones(seq), "position_ids": torch.arange(seq)}
            for t in tokens]


class Run:
    """Model, optimizer, schedule and step loop at one layout."""

    def __init__(self, base: dict, layout: dict):
        from factory.runtime.runtime import init_runtime, release_parallel_state
        from factory.train import setup
        from factory.train.config import TrainConfig
        from factory.train.loop import TrainLoop, TrainParts
        from factory.train.phases import Phase
        from tests.conftest import make_config

        release_parallel_state()  # the previous layout's
        self.cfg = make_config(base, parallel=layout)
        self.rt = init_runtime(self.cfg.runtime, self.cfg.parallel)
        self.train_config = TrainConfig.model_validate(TRAIN)
        self.model, ddp, self.optimizer = setup.build_model(self.cfg.model, self.rt, self.train_config, 1e-2, 1e-3)
        self.scheduler = setup.build_scheduler(self.optimizer, self.train_config, 1e-2, 1e-3)
        micro = setup.micro_batches_per_rank("pretrain", self.train_config, self.rt.data_parallel_size)
        phase = Phase(Path("synthetic"), None, 0, TRAIN["train_iters"], dataset=_dataset(self.cfg))
        parts = TrainParts(self.model, ddp, self.optimizer, self.scheduler, [phase], None, self.cfg.model, micro, None)
        self.loop = TrainLoop(self.train_config, self.rt, parts, None, None)

    def steps(self, state, n: int) -> list[float]:
        losses = [self.loop.train_step(state)["loss"] for _ in range(n)]
        self.loop.close()
        return losses


def main(out: Path, kinds: list[str]) -> None:
    from factory.runtime.runtime import shutdown_runtime

    for kind in kinds:
        result = matrix(kind, out / kind)
        if torch.distributed.get_rank() == 0:
            (out / f"{kind}.json").write_text(json.dumps(result, indent=1))
    shutdown_runtime()


def matrix(kind: str, out: Path) -> dict:
    """The reference and every target's resume and fresh continuation, for each source layout of `kind`."""
    from factory.train import checkpoint as ckpt
    from factory.train import setup
    from factory.train.state import TrainState
    from tests.conftest import TINY_DENSE, TINY_MOE

    base = TINY_MOE if kind == "moe" else TINY_DENSE
    result: dict = {"reference": {}}
    for source, layout in LAYOUTS[kind].items():
        run, state = Run(base, layout), TrainState()
        run.steps(state, 2)
        ckpt.save(out / source, state.iteration, run.model, run.cfg.model, run.rt, optimizer=run.optimizer,
                  scheduler=run.scheduler, meta=state.meta("pretrain", 0, final_lr=0.0, peak_lr=1e-2, min_lr=1e-3,
                                                           phase="synthetic"))
        result["reference"][source] = run.steps(state, 2)
        result[source] = {}
        for target, target_layout in LAYOUTS[kind].items():
            info = ckpt.read_info(out / source)
            outcome = {}
            for resuming in (True, False):
                run = Run(base, target_layout)
                start = setup.StartPoint(info.model, info, resuming=resuming)
                state = setup.restore("pretrain", start, run.model, run.optimizer, run.scheduler, run.rt,
                                      keep_optimizer=False, lr=1e-2, min_lr=1e-3)
                if not resuming:  # the same data and learning rate: only the optimizer state differs
                    state.iteration, state.consumed_samples = info.iteration, info.meta.consumed_samples
                    run.scheduler.load_state_dict(info.scheduler)
                outcome["resume" if resuming else "fresh"] = run.steps(state, 2)
            result[source][target] = outcome
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
    exit_process(0)  # the interpreter's teardown of torch and Megatron costs ~1 CPU-s
