"""Benchmark `export` on a synthetic checkpoint: seconds, peak RSS, and the disk read rate for comparison.

    .venv/bin/python scripts/bench_convert.py --workdir /tmp/bench_convert [--layers 12 --hidden 1024 ...]

Steps, each in a fresh process so peak RSS is per step: (1) build and save a random TP=1 checkpoint,
(2) read its files once with the page cache dropped (the disk rate), (3) export it with verification.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _model(args) -> dict:
    return {"num_layers": args.layers, "hidden_size": args.hidden, "ffn_hidden_size": args.ffn,
            "num_attention_heads": args.heads, "num_query_groups": args.groups, "seq_length": 128,
            "vocab_size": args.vocab}


def make(args) -> None:
    from factory.config import validate_config
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint import save

    cfg = validate_config({"run": {"name": "bench", "dir": str(args.workdir)},
                           "runtime": {"device": "cpu", "precision": "fp32"}, "model": _model(args)})
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        save(args.workdir / "ckpt", 1, build_gpt_model(cfg.model, rt), cfg.model, rt)


def export(args) -> None:
    from factory.convert.export import export_checkpoint
    from factory.runtime.config import RuntimeConfig

    result = export_checkpoint(args.workdir / "ckpt", args.workdir / "hf", runtime=RuntimeConfig(device="cpu"),
                               tokenizer_dir=None, max_shard_bytes=int(args.shard_gb * 1e9))
    print(json.dumps({"max_abs_logit_diff": result.max_abs_logit_diff, "shards": len(result.shards),
                      "bytes_written": result.total_bytes, "export_peak_rss_gb": _peak_rss_gb()}))


def _peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)


def _drop_cache(folder: Path) -> None:
    """Evict the folder's clean pages (no root needed), so the next read comes from disk."""
    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def read_rate(folder: Path) -> tuple[int, float]:
    _drop_cache(folder)
    total, t0 = 0, time.perf_counter()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(64 << 20):
                total += len(chunk)
    return total, time.perf_counter() - t0


def _child(step: str, argv: list[str]) -> tuple[float, str]:
    """(seconds, last stdout line) of `step` run in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--step", step, *argv], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{step} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--shard-gb", type=float, default=0.25)
    p.add_argument("--step", choices=["make", "export"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        {"make": make, "export": export}[args.step](args)
        return
    argv = sys.argv[1:]
    make_s, _ = _child("make", argv)
    ckpt_bytes, read_s = read_rate(args.workdir / "ckpt")
    _drop_cache(args.workdir / "ckpt")
    export_s, out = _child("export", argv)
    print(json.dumps({"checkpoint_gb": round(ckpt_bytes / 1e9, 3), "disk_read_s": round(read_s, 2),
                      "disk_read_gb_per_s": round(ckpt_bytes / 1e9 / read_s, 3), "make_s": round(make_s, 1),
                      "export_s": round(export_s, 1), **json.loads(out or "{}")}, indent=2))


if __name__ == "__main__":
    main()
