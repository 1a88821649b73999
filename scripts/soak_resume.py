"""Soak test: N runs each SIGKILLed at random steps and resumed; are all loss curves bit-identical?

    .venv/bin/python scripts/soak_resume.py --cycles 10 [--config configs/demo-cpu.yaml] [--iters 12]

Trains on the demo's tokenizer and packed data (`--data`, default runs/demo-cpu; run the demo first). Each cycle
trains `--iters` steps with a checkpoint every step, is killed with SIGKILL 1-2 times at random
moments, resumes until done, and its metrics.jsonl losses are compared with an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_cmd(config: str, data: Path, run_dir: Path, iters: int) -> list[str]:
    return [sys.executable, "-m", "factory.stage", "pretrain", "--config", config, f"run.dir={run_dir}",
            f"pretrain.train_iters={iters}", "pretrain.checkpoint.save_interval=1",
            "pretrain.checkpoint.keep_last=2", "pretrain.eval_interval=null", "pretrain.log_interval=1",
            f"pretrain.blend_file={data}/pack/blend.json", f"pretrain.tokenizer_dir={data}/tokenizer",
            "pretrain.schedule.warmup_iters=2"]


def losses(run_dir: Path) -> list[float]:
    path = run_dir / "pretrain" / "metrics.jsonl"
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()] if path.exists() else []


def run_to_end(cmd: list[str], log) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed with exit {proc.returncode}; see {log.name}")


def killed_run(cmd: list[str], run_dir: Path, iters: int, rng: random.Random, log) -> int:
    """Start, SIGKILL once the metrics file reaches a random step (or at a random time), return kills."""
    target = rng.randint(1, iters - 1)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    while proc.poll() is None:
        if len(losses(run_dir)) >= target:
            time.sleep(rng.uniform(0, 1.0))  # anywhere inside the next step, save included
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return 1
        time.sleep(0.02)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo-cpu.yaml")
    parser.add_argument("--data", type=Path, default=Path("runs/demo-cpu"),
                        help="folder with the pack/ and tokenizer/ outputs to train on")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    with (work / "log.txt").open("w") as log:
        t0 = time.perf_counter()
        run_to_end(stage_cmd(args.config, args.data.resolve(), work / "reference", args.iters), log)
        reference = losses(work / "reference")
        identical = 0
        for cycle in range(args.cycles):
            run_dir = work / f"cycle{cycle}"
            cmd = stage_cmd(args.config, args.data.resolve(), run_dir, args.iters)
            kills = sum(killed_run(cmd, run_dir, args.iters, rng, log) for _ in range(rng.randint(1, 2)))
            run_to_end(cmd, log)
            same = losses(run_dir) == reference
            identical += same
            print(f"cycle {cycle + 1}/{args.cycles}: {kills} SIGKILL(s), resumed, "
                  f"{'identical' if same else 'DIFFERENT'} loss curve ({len(reference)} steps)", flush=True)
        print(f"{identical}/{args.cycles} identical to the uninterrupted run; "
              f"{time.perf_counter() - t0:.0f} s; logs in {work}")
    sys.exit(0 if identical == args.cycles else 1)


if __name__ == "__main__":
    main()
