"""Benchmark the streaming `upcycle` stage: wall time and peak RSS against the disk's own read/write rates.

    .venv/bin/python scripts/bench_upcycle.py [--work DIR] [--small] [--layers 16 --hidden 2048 ...]
        [--mode copy|granular|drop] [--experts 4] [--keep]

Steps: (1) write a random dense checkpoint (default 3.4 GB fp32) with `save_streaming`, one tensor at a
time, never the whole model; the write rate is its bytes over the write + fsync time, minus the time
spent making the random tensors; (2) drop its files from the page cache (fsync + POSIX_FADV_DONTNEED) and
read them in 16 MiB blocks: the disk read rate; (3) drop them again and run
`python -m factory.stage upcycle` in a child process: wall seconds, the child's peak RSS and the
metrics of its manifest. Prints a table comparing the stage's time with the "disk-bound" time
(dense bytes / read rate + MoE bytes / write rate) and its RSS with the dense model and one MoE layer.
Deletes the checkpoints at the end unless --keep (the config, log and manifest stay in --work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 16 << 20
SHAPES = {  # ~852M parameters (3.4 GB fp32) by default; --small for a check in seconds
    "default": {"layers": 16, "hidden": 2048, "ffn": 5632, "heads": 16, "groups": 4, "vocab": 32000, "seq": 2048},
    "small": {"layers": 2, "hidden": 256, "ffn": 704, "heads": 4, "groups": 2, "vocab": 1000, "seq": 128},
}
GRANULARITY = {"copy": 1, "granular": 2, "drop": 1}


def dense_model(args) -> dict:
    return {"num_layers": args.layers, "hidden_size": args.hidden, "ffn_hidden_size": args.ffn,
            "num_attention_heads": args.heads, "num_query_groups": args.groups, "seq_length": args.seq,
            "vocab_size": args.vocab}


def _session():
    from factory.runtime.config import ParallelConfig, RuntimeConfig
    from factory.runtime.runtime import runtime_session

    return runtime_session(RuntimeConfig(device="cpu", precision="fp32"), ParallelConfig())


class RandomProducer:
    """name -> a seeded random tensor of that parameter's shape (std 0.02; norm weights 1)."""

    def __init__(self, layout, seed: int):
        self.layout, self.seed, self.seconds = layout, seed, 0.0

    def __call__(self, name: str):
        import torch

        t0 = time.perf_counter()
        shape, dtype = self.layout.params[name]
        if len(shape) == 1:  # RMSNorm weights (the model has no biases)
            out = torch.ones(shape, dtype=dtype)
        else:
            gen = torch.Generator().manual_seed(self.seed + zlib.crc32(name.encode()))
            out = torch.randn(shape, generator=gen, dtype=dtype).mul_(0.02)
        self.seconds += time.perf_counter() - t0
        return out


def write_dense(root: Path, model: dict, seed: int) -> tuple[float, float]:
    """Write the random dense checkpoint; (seconds of write + fsync, of which making the tensors)."""
    from factory.model.config import ModelConfig
    from factory.train.checkpoint_meta import CheckpointMeta
    from factory.train.checkpoint_stream import Layout, save_streaming

    cfg = ModelConfig(**model)
    with _session() as rt:
        produce = RandomProducer(Layout(cfg, rt), seed)
        t0 = time.perf_counter()
        save_streaming(root, cfg, rt, produce, meta=CheckpointMeta(stage="pretrain"))
        _sync(root, drop=False)
        return time.perf_counter() - t0, produce.seconds


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in _files(folder))


def _sync(folder: Path, drop: bool = True) -> None:
    """fsync every file under `folder` and, with `drop`, evict its pages so the next read hits the disk."""
    for f in _files(folder):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            if drop:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_seconds(folder: Path) -> float:
    """Seconds to read every file under `folder` from disk in 16 MiB blocks."""
    _sync(folder)
    buf = bytearray(BLOCK)
    t0 = time.perf_counter()
    for f in _files(folder):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - t0


def write_config(path: Path, args, run_dir: Path, source: Path) -> None:
    moe = {"num_experts": args.experts, "router_topk": 2, "token_dispatcher": "allgather"}
    raw = {"run": {"name": "bench_upcycle", "dir": str(run_dir)},
           "runtime": {"device": "cpu", "precision": "fp32"}, "model": dense_model(args),
           "upcycle": {"source": str(source), "mode": args.mode, "granularity": GRANULARITY[args.mode],
                       "moe": moe}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def model_sizes(config: Path) -> tuple[int, int]:
    """Bytes of the dense model and of one layer of the MoE model this config upcycles to."""
    from factory.config import load_config
    from factory.train.checkpoint_stream import Layout
    from factory.upcycle.target import moe_model

    cfg = load_config(config)
    with _session() as rt:
        return (Layout(cfg.model, rt).nbytes(),
                Layout(moe_model(cfg.model, cfg.upcycle), rt).nbytes("decoder.layers.0."))


def run_stage(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of the stage in a child process; exits with its log on failure."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - t0
    if rc:
        sys.exit(f"upcycle stage failed (exit {rc}); last lines of {log}:\n" + log.read_text()[-3000:])
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux


def gb(n: float) -> str:
    return f"{n / 1e9:.3f}"


def table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_upcycle"))
    p.add_argument("--small", action="store_true", help="a tiny model, for a quick end-to-end check")
    for key in SHAPES["default"]:
        p.add_argument(f"--{key}", type=int,
                       help=f"default {SHAPES['default'][key]} ({SHAPES['small'][key]} with --small)")
    p.add_argument("--mode", choices=sorted(GRANULARITY), default="copy", help="granular: granularity 2")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the dense and MoE checkpoints")
    args = p.parse_args()
    for key, value in SHAPES["small" if args.small else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    work = args.work.resolve()
    dense, run_dir = work / "dense", work / "run"
    for d in (dense, run_dir):
        shutil.rmtree(d, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "manifest.json").unlink(missing_ok=True)
    config = work / "upcycle.yaml"
    write_config(config, args, run_dir, dense)
    cmd = [sys.executable, "-m", "factory.stage", "upcycle", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # before runtime_session adds MASTER_PORT, RANK, ...
    try:
        write_s, make_s = write_dense(dense, dense_model(args), args.seed)
        dense_bytes = _bytes(dense)
        write_rate = dense_bytes / (write_s - make_s)
        read_rate = dense_bytes / read_seconds(dense)
        dense_model_bytes, moe_layer_bytes = model_sizes(config)
        _sync(dense)
        upcycle_s, peak_rss = run_stage(cmd, env, work / "upcycle.log")
        moe_root = run_dir / "upcycle" / "checkpoints"
        manifest = json.loads((moe_root / "manifest.json").read_text())
        shutil.copy(moe_root / "manifest.json", work / "manifest.json")
        moe_bytes = _bytes(moe_root) - (moe_root / "manifest.json").stat().st_size
    finally:
        if not args.keep:
            shutil.rmtree(dense, ignore_errors=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    metrics = manifest["metrics"]
    disk_s = dense_bytes / read_rate + moe_bytes / write_rate
    print(table([
        ("dense checkpoint GB", gb(dense_bytes)),
        ("MoE checkpoint GB", gb(moe_bytes)),
        ("upcycle wall s (child process)", f"{upcycle_s:.1f}"),
        ("of which in the stage (manifest `seconds`; the rest is imports and start-up)",
         f"{metrics['seconds']:.1f}"),
        ("upcycle peak RSS GB", gb(peak_rss)),
        ("dense model GB (parameters)", gb(dense_model_bytes)),
        ("one MoE layer GB", gb(moe_layer_bytes)),
        ("disk read GB/s (page cache dropped, 16 MiB blocks)", f"{read_rate / 1e9:.3f}"),
        ("disk write GB/s (write + fsync, tensor generation excluded)", f"{write_rate / 1e9:.3f}"),
        ("dense write s (of which making random tensors)", f"{write_s:.1f} ({make_s:.1f})"),
        ("disk-bound s (dense / read + MoE / write)", f"{disk_s:.1f}"),
        ("upcycle s / disk-bound s", f"{upcycle_s / disk_s:.2f}"),
        ("max_abs_logit_diff", f"{metrics['max_abs_logit_diff']:.3g}"),
        ("bytes_read / bytes_written (manifest)", f"{metrics['bytes_read']:,} / {metrics['bytes_written']:,}"),
    ]))
    print(f"\nbenchmark: {shlex.join([sys.executable, *sys.argv])}")
    print(f"stage:     {shlex.join(cmd)}   (cwd {ROOT})")


if __name__ == "__main__":
    main()
