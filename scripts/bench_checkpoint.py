"""How long a checkpoint save holds up the step loop (synchronous vs background), and what a load reads.

    .venv/bin/python scripts/bench_checkpoint.py [--hidden 768 --layers 8 --vocab 32000 --out /tmp/bench-ckpt]
    .venv/bin/python scripts/bench_checkpoint.py --ranks 2        # the load figures on 2 gloo processes (DP2)

One process (CPU, fp32) trains a GPT of the given shape through Megatron's optimizer, then saves it as the
training loop does (factory.train.checkpoint: fully parallel save, integrity digests taken while writing):
synchronously, and in the background while steps go on. Printed: checkpoint size, the seconds the step loop
waited per save (for a background save: the first, which also allocates the host buffers it copies into, and the
next), the writer's length and the steps it overlapped (their mean step time against steps without a write), what
re-reading the files to hash them would have cost (the integrity record is taken while writing instead), and the
bytes a load reads. With --ranks N the script runs itself under torchrun with N data-parallel ranks and prints the
bytes each rank writes, and reads with Megatron's fully parallel load (the factory's) and with the plain torch_dist
load (every replica reads the whole checkpoint). It replaces `<out>/checkpoints`, its own output, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="steps timed with and without a background write")
    parser.add_argument("--ranks", type=int, default=1, help="> 1: the load figures on that many gloo processes")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-checkpoint"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


class Trainer:
    """A GPT, its Megatron optimizer and one random batch, stepped as the training loop steps them."""

    def __init__(self, args):
        import torch

        from factory.config import validate_config
        from factory.runtime.runtime import init_runtime
        from factory.train import setup
        from factory.train.config import TrainConfig
        from factory.train.step import make_forward_step

        self.cfg = validate_config({
            "run": {"name": "bench", "dir": str(args.out)}, "runtime": {"device": "cpu", "precision": "fp32"},
            "model": {"num_layers": args.layers, "hidden_size": args.hidden, "ffn_hidden_size": args.hidden * 8 // 3,
                      "num_attention_heads": args.hidden // 64, "seq_length": args.seq, "vocab_size": args.vocab}})
        self.rt = init_runtime(self.cfg.runtime, self.cfg.parallel)
        train = TrainConfig(train_iters=10, global_batch_size=self.rt.data_parallel_size)
        self.model, self.ddp, self.optimizer = setup.build_model(self.cfg.model, self.rt, train, 1e-4, 1e-5)
        self.step_fn = make_forward_step(0.0, self.rt.device)
        tokens = torch.randint(0, args.vocab, (1, args.seq + 1), generator=torch.Generator().manual_seed(0))
        self.batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(1, args.seq),
                      "position_ids": torch.arange(args.seq)[None]}

    def step(self) -> float:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        start = time.perf_counter()
        with self.rt.compute_context():
            self.ddp.zero_grad_buffer()
            self.optimizer.zero_grad()
            get_forward_backward_func()(forward_step_func=self.step_fn, data_iterator=iter([self.batch]),
                                        model=[self.ddp], num_microbatches=1, seq_length=self.cfg.model.seq_length,
                                        micro_batch_size=1, forward_only=False)
            self.optimizer.step()
        return time.perf_counter() - start


def save_figures(trainer: Trainer, root: Path, steps: int) -> dict:
    from factory.train import checkpoint as ckpt
    from factory.train import checkpoint_writer, integrity

    write_all, writes = checkpoint_writer.write_all, []

    def timed_write_all(*args):  # how long the writer threads take, to the end of their last file
        start = time.perf_counter()
        write_all(*args)
        writes.append(time.perf_counter() - start)

    checkpoint_writer.write_all = timed_write_all

    def save(iteration: int, background: bool):
        return ckpt.begin_save(root, iteration, trainer.model, trainer.cfg.model, trainer.rt,
                               optimizer=trainer.optimizer, background=background)

    quiet = [trainer.step() for _ in range(steps)]
    start = time.perf_counter()
    save(1, False).commit(3, None)
    sync_wait = time.perf_counter() - start
    folder = ckpt.iteration_dir(root, 1)
    files = [p for p in folder.iterdir() if p.name.endswith(".distcp")]
    start = time.perf_counter()
    for path in files:
        integrity.checksum(path)
    rehash = time.perf_counter() - start
    start = time.perf_counter()
    first = save(2, True)  # the first background save allocates its host buffers
    first_wait = time.perf_counter() - start
    first.commit(3, None)
    start = time.perf_counter()
    pending = save(3, True)
    async_wait = time.perf_counter() - start
    during = []
    while pending.thread.is_alive() or not during:
        during.append(trainer.step())
    start = time.perf_counter()
    pending.commit(3, None)
    commit = time.perf_counter() - start
    checkpoint_writer.write_all = write_all
    return {"checkpoint_bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "tensor_file_bytes": sum(p.stat().st_size for p in files),
            "sync_wait_s": sync_wait, "sync_write_s": writes[0], "first_background_wait_s": first_wait,
            "background_wait_s": async_wait, "background_write_s": writes[2],
            "commit_s": commit, "steps_during_write": len(during), "step_s_during_write": sum(during) / len(during),
            "step_s_quiet": sum(quiet[1:]) / max(1, len(quiet) - 1), "rehash_from_page_cache_s": rehash}


def load_figures(trainer: Trainer, root: Path) -> dict:
    """Bytes this rank wrote, and reads with the factory's load (fully parallel) and with Megatron's plain
    torch_dist load (model and optimizer state both times)."""
    from megatron.core import dist_checkpointing

    from factory.train import checkpoint as ckpt
    from factory.train import checkpoint_optimizer, integrity_reader

    start = time.perf_counter()
    ckpt.load(root, trainer.model, trainer.rt, optimizer=trainer.optimizer)
    parallel = {"bytes_read": integrity_reader._log.bytes_read, "seconds": time.perf_counter() - start}
    folder = ckpt.resolve(root)
    model_sd = trainer.model.sharded_state_dict()
    tensors, _ = checkpoint_optimizer.load_request(trainer.optimizer, model_sd, checkpoint_optimizer.METADATA)
    log = integrity_reader.start_load()
    start = time.perf_counter()
    with trainer.rt.compute_context():
        dist_checkpointing.load({"model": model_sd, "optimizer": tensors}, str(folder))
    plain = {"bytes_read": log.bytes_read, "seconds": time.perf_counter() - start}
    written = sum(p.stat().st_size for p in folder.glob(f"*__{trainer.rt.rank}_*.distcp"))
    return {"bytes_written_by_this_rank": written, "fully_parallel_load": parallel, "plain_torch_dist_load": plain}


def worker(args) -> None:
    import torch

    from factory.runtime.runtime import shutdown_runtime

    trainer = Trainer(args)
    trainer.step()
    root = args.out / "checkpoints"
    result = {"rank": trainer.rt.rank, "world": trainer.rt.world_size,
              "parameters": sum(p.numel() for p in trainer.model.parameters())}
    if trainer.rt.world_size == 1:
        result.update(save_figures(trainer, root, args.steps))
    else:
        from factory.train import checkpoint as ckpt

        ckpt.save(root, 1, trainer.model, trainer.cfg.model, trainer.rt, optimizer=trainer.optimizer)
    result.update(load_figures(trainer, root))
    results = [None] * trainer.rt.world_size
    torch.distributed.all_gather_object(results, result)
    if trainer.rt.is_main:
        print(json.dumps(results, indent=1))
    shutdown_runtime()


def main() -> None:
    args = _parse()
    sys.path.insert(0, str(ROOT))
    if not args.worker:
        shutil.rmtree(args.out / "checkpoints", ignore_errors=True)  # an earlier run of this script's
    if args.worker or args.ranks == 1:
        worker(args)
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
           __file__, "--worker", "--hidden", str(args.hidden), "--layers", str(args.layers), "--vocab",
           str(args.vocab), "--seq", str(args.seq), "--out", str(args.out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    sys.exit(subprocess.run(cmd, env=env, check=False).returncode)


if __name__ == "__main__":
    main()
