"""Benchmark (not a test): MeCab pretokenization chars/s with 1 and 2 workers, and SentencePiece training time.

    .venv/bin/python scripts/bench_tokenizer.py data/demo/ja.txt [--repeat 2] [--vocab-size 8000]

Prints a Markdown table; docs/stages/tokenizer.md records the figures and the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from tokenizer.config import TokenizerConfig
from tokenizer.pretokenize import write_training_text
from tokenizer.train import train


def read_lines(path: Path, repeat: int) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return lines * repeat


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_pretokenize(lines: list[str], dictionary: str, workers: int, out: Path) -> str:
    """Wall-clock chars/s, and chars per CPU-second of MeCab work, which a busy machine does not distort.
    With 1 worker MeCab runs in this process; with more, in child processes (this one only feeds them)."""
    main0, children0 = time.process_time(), _children_cpu()
    result = write_training_text(iter(lines), out, dictionary, "morpheme", workers)
    main_cpu, children_cpu = time.process_time() - main0, _children_cpu() - children0
    mecab_cpu = main_cpu if workers == 1 else children_cpu
    return (f"| pretokenize {dictionary} | {workers} | {result.chars:,} chars | {result.seconds:.2f} s | "
            f"{result.chars_per_second / 1e6:.2f}M chars/s | {result.chars / mecab_cpu / 1e6:.2f}M | "
            f"{main_cpu:.2f} s |")


def bench_train(text: Path, model_type: str, vocab_size: int, threads: int, tmp: Path) -> str:
    tc = TokenizerConfig(model_type=model_type, vocab_size=vocab_size, num_workers=threads)
    seconds = train(tc, text, tmp / f"{model_type}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (f"| train {model_type} {vocab_size:,} | {threads} | {text.stat().st_size:,} bytes | {seconds:.2f} s | "
            f"peak RSS so far {rss:.0f} MiB | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", type=Path, help="Japanese text, one sentence or paragraph per line")
    parser.add_argument("--repeat", type=int, default=1, help="repeat the text to lengthen the run")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--dictionaries", default="unidic-lite,ipadic")
    args = parser.parse_args()
    lines = read_lines(args.text, args.repeat)
    print(f"cpus: {os.cpu_count()}; text: {args.text} x{args.repeat}\n")
    print("| step | workers/threads | input | wall | wall throughput | chars per worker CPU-second | "
          "feeding process CPU |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for dictionary in args.dictionaries.split(","):
            for workers in (1, 2):
                print(bench_pretokenize(lines, dictionary, workers, tmp / "train.txt"), flush=True)
        for model_type in ("unigram", "bpe"):
            for threads in (1, 2):
                print(bench_train(tmp / "train.txt", model_type, args.vocab_size, threads, tmp), flush=True)


if __name__ == "__main__":
    main()
