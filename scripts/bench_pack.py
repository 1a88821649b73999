"""Benchmark (not a test): pack against the raw encode speed of its tokenizer and Megatron-LM's preprocess_data.py.

    .venv/bin/python scripts/bench_pack.py CORPUS.jsonl TOKENIZER_DIR [--workers 2] [--megatron-lm DIR] [--repeat 2]

On one corpus and one tokenizer.model, in one run (each step --repeat times, best wall time kept; gigatoken's
pretoken cache lives as long as the process, so its repeats run warm):
- SentencePiece batch encode (`encode(texts, num_threads=workers)`) of the already parsed texts;
- gigatoken batch encode of the same texts (BPE models only; all cores);
- `factory.data.pack.pack_records`: reading the JSONL, parsing, encoding, writing .bin/.idx, loading the tokenizer;
- the pack stage as a process (`python -m factory.stage pack`), interpreter and imports included;
- Megatron-LM's tools/preprocess_data.py as a process (with --megatron-lm, a Megatron-LM checkout; its
  megatron.core is the venv's), whose token ids are compared with pack's (EOD aside: it appends </s>).
Prints tokens/s and the ratios; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (workers, subprocesses)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best(fn, repeat: int) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds), result) of the fastest of `repeat` calls."""
    runs, out = [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), cpu_seconds()
        out = fn()
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    return min(runs), out


def megatron_run(megatron_lm: Path, corpus: Path, model: Path, workers: int, out: Path) -> list[str]:
    shim = out / "shim"
    shim.mkdir(exist_ok=True)
    # megatron.training uses typing.override (Python 3.12); a no-op stands in on 3.11.
    (shim / "sitecustomize.py").write_text("import typing\nif not hasattr(typing, 'override'):\n"
                                           "    typing.override = lambda f: f\n")
    return [sys.executable, str(megatron_lm / "tools" / "preprocess_data.py"), "--input", str(corpus),
            "--output-prefix", str(out / "mlm"), "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", str(model), "--workers", str(workers), "--append-eod", "--log-interval", "1000000"]


def stage_run(corpus: Path, tokenizer_dir: Path, workers: int, run_dir: Path) -> list[str]:
    datasets = json.dumps([{"name": "bench", "path": str(corpus)}])
    return [sys.executable, "-m", "factory.stage", "pack", "--config", str(ROOT / "configs" / "demo-cpu.yaml"),
            f"pack.datasets={datasets}", f"pack.tokenizer_dir={tokenizer_dir}", f"pack.num_workers={workers}",
            f"run.dir={run_dir}", "blend=null"]


def timed_process(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="JSONL file")
    ap.add_argument("tokenizer_dir", type=Path, help="folder with tokenizer.model")
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--megatron-lm", type=Path, help="Megatron-LM checkout (tools/preprocess_data.py)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each step; the fastest is kept")
    args = ap.parse_args()

    import sentencepiece as spm

    from factory.data.encode import DocumentEncoder, eod_id, uses_gigatoken
    from factory.data.pack import pack_records
    from factory.data.pack_config import PackConfig

    task_bytes = PackConfig.model_fields["task_bytes"].default

    corpus, model = args.corpus.resolve(), (args.tokenizer_dir / "tokenizer.model").resolve()
    sp = spm.SentencePieceProcessor(model_file=str(model))
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line)[args.text_field] for line in f if line.strip()]
    docs = sum(1 for t in texts if t)
    rows = []

    seconds, encoded = best(lambda: sp.encode(texts, num_threads=args.workers), args.repeat)
    tokens = sum(map(len, encoded)) + docs  # + one EOD per non-empty document, as pack writes
    rows.append((f"SentencePiece batch encode, {args.workers} threads", seconds))
    if uses_gigatoken(model):
        import gigatoken

        tokenizer = gigatoken.Tokenizer.from_sentencepiece(str(model))  # loading is not encoding
        seconds, _ = best(lambda: tokenizer.encode_batch(texts), args.repeat)
        rows.append(("gigatoken batch encode, all cores", seconds))
    limit = min(wall for _, (wall, _) in rows)
    cpu_limit = min(cpu for _, (_, cpu) in rows)
    print(f"{corpus.name}: {corpus.stat().st_size / 1e6:.1f} MB, {len(texts):,} documents, {tokens:,} tokens "
          f"(EOD included); tokenizer {model} ({DocumentEncoder(model).backend} in pack); "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seconds, counts = best(lambda: pack_records(corpus, args.text_field, tmp / "pack_text_document", model,
                                                  sp.vocab_size(), eod_id(sp), args.workers, task_bytes), args.repeat)
        assert counts["tokens"] == tokens, (counts, tokens)
        rows.append((f"pack_records, {args.workers} threads", seconds))
        pack_phase = seconds
        seconds, _ = best(lambda: timed_process(stage_run(corpus, args.tokenizer_dir.resolve(), args.workers,
                                                          tmp / "run")), args.repeat)
        rows.append((f"pack stage process, {args.workers} threads", seconds))
        stage = seconds
        if args.megatron_lm:
            cmd = megatron_run(args.megatron_lm.resolve(), corpus, model, args.workers, tmp)
            seconds, _ = best(lambda: timed_process(cmd, {"PYTHONPATH": str(tmp / "shim")}), args.repeat)
            rows.append((f"Megatron-LM preprocess_data.py process, {args.workers} workers", seconds))
            ours = np.fromfile(tmp / "pack_text_document.bin", dtype=np.uint16 if sp.vocab_size() < 65500 else np.int32)
            theirs = np.fromfile(tmp / "mlm_text_document.bin", dtype=ours.dtype)
            same = ours.size == theirs.size and np.array_equal(np.where(ours == eod_id(sp), -1, ours),
                                                               np.where(theirs == sp.eos_id(), -1, theirs))
            print(f"token ids equal to Megatron-LM's (EOD aside): {same}\n")
    print("| step | wall s | tokens/s | CPU s | tokens per CPU-second |\n|---|---|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.2f} | {tokens / wall:,.0f} | {cpu:.2f} | {tokens / cpu:,.0f} |")
    print(f"\npack_records / raw encode limit: {limit / pack_phase[0]:.0%} wall, {cpu_limit / pack_phase[1]:.0%} CPU")
    if args.megatron_lm:
        megatron = rows[-1][1]
        print(f"pack stage process vs Megatron-LM process: {megatron[0] / stage[0]:.2f}x wall, "
              f"{megatron[1] / stage[1]:.2f}x CPU")


if __name__ == "__main__":
    main()
