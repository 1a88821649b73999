"""Benchmark streaming `export` and `import` on a synthetic checkpoint: seconds and peak RSS against
the disk's read rate.

    .venv/bin/python scripts/bench_convert.py --workdir /tmp/bench_convert [--layers 12 --hidden 1024 ...]

Steps, each in a fresh process so peak RSS is per step: (1) stream a random TP=1 checkpoint to disk
(never whole in memory) and a word-level tokenizer of the model's vocab size, (2) read the checkpoint's
files once with the page cache dropped (the disk rate), (3) export it to HF with verification, (4) import
that folder back to a Megatron checkpoint with verification. Prints one JSON object.
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
    from bench_upcycle import RandomProducer

    from factory.model.config import ModelConfig
    from factory.runtime.config import ParallelConfig, RuntimeConfig
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint_meta import CheckpointMeta
    from factory.train.checkpoint_stream import Layout, save_streaming

    cfg = ModelConfig(**_model(args))
    with runtime_session(RuntimeConfig(device="cpu", precision="fp32"), ParallelConfig()) as rt:
        save_streaming(args.workdir / "ckpt", cfg, rt, RandomProducer(Layout(cfg, rt), seed=0),
                       meta=CheckpointMeta(stage="pretrain"))
    _write_tokenizer(args.workdir / "tokenizer", args.vocab)


def _write_tokenizer(folder: Path, size: int) -> None:
    """A word-level HF tokenizer with `size` ids (export copies it; import needs one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(size - len(specials))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(folder)


def export(args) -> None:
    from factory.convert.export import export_checkpoint
    from factory.runtime.config import RuntimeConfig

    result = export_checkpoint(args.workdir / "ckpt", args.workdir / "hf", runtime_cfg=RuntimeConfig(device="cpu"),
                               tokenizer_dir=args.workdir / "tokenizer", max_shard_bytes=int(args.shard_gb * 1e9))
    print(json.dumps({"export_max_abs_logit_diff": result.max_abs_logit_diff, "shards": len(result.shards),
                      "hf_bytes_written": result.total_bytes, "export_peak_rss_gb": _peak_rss_gb()}))


def import_back(args) -> None:
    from factory.convert.hf_import import import_hf
    from factory.runtime.config import RuntimeConfig

    result = import_hf(args.workdir / "hf", args.workdir / "imported", runtime_cfg=RuntimeConfig(device="cpu"),
                       tokenizer_out=args.workdir / "imported_tokenizer", seq_length=128)
    print(json.dumps({"import_max_abs_logit_diff": result.max_abs_logit_diff, "import_peak_rss_gb": _peak_rss_gb()}))


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
    p.add_argument("--step", choices=["make", "export", "import"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        {"make": make, "export": export, "import": import_back}[args.step](args)
        return
    argv = sys.argv[1:]
    make_s, _ = _child("make", argv)
    ckpt_bytes, read_s = read_rate(args.workdir / "ckpt")
    _drop_cache(args.workdir / "ckpt")
    export_s, export_out = _child("export", argv)
    _drop_cache(args.workdir / "hf")
    import_s, import_out = _child("import", argv)
    print(json.dumps({"checkpoint_gb": round(ckpt_bytes / 1e9, 3), "disk_read_s": round(read_s, 2),
                      "disk_read_gb_per_s": round(ckpt_bytes / 1e9 / read_s, 3), "make_s": round(make_s, 1),
                      "export_s": round(export_s, 1), **json.loads(export_out or "{}"),
                      "import_s": round(import_s, 1), **json.loads(import_out or "{}")}, indent=2))


if __name__ == "__main__":
    main()
