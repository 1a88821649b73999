"""Benchmark (not a test): granularities compared at equal vocabulary and data, on held-out text.

    .venv/bin/python scripts/bench_granularity.py --train data/split/tune_ja.txt data/split/tune_en.txt \
        --heldout data/split/heldout_ja.txt data/split/heldout_en.txt [--vocab-size 24000] [--model-type unigram]

Trains one tokenizer per granularity (none, morpheme, bunsetsu) on the --train lines with the stage's own
functions (MeCab pretokenization, SentencePiece training, HF export) and evaluates every --heldout line as
the stage's report does: chars per token, tokens crossing MeCab morpheme and bunsetsu boundaries, exact
round trip, HF-vs-SentencePiece ids. Prints a Markdown table (docs/stages/tokenizer.md records it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from tokenizer import hf
from tokenizer.config import TokenizerConfig
from tokenizer.corpus import iter_lines
from tokenizer.pretokenize import Segmenter, write_training_text
from tokenizer.report import evaluate
from tokenizer.train import train


def build(tc: TokenizerConfig, train_lines: list[str], out: Path) -> tuple[Any, Any, float]:
    """Train in `out` as the stage does (MeCab pretokenization, SentencePiece, HF export): (SentencePiece
    processor, HF tokenizer, training seconds)."""
    import sentencepiece as spm

    out.mkdir(parents=True)
    write_training_text(iter(train_lines), out / "train.txt", tc.dictionary, tc.granularity, tc.num_workers)
    seconds = train(tc, out / "train.txt", out / "tokenizer")
    (out / "train.txt").unlink()
    hf.export(out, tc.tokens)
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")), hf.load(out), seconds


def measure(tc: TokenizerConfig, sp, hf_tok, heldout: list[str]) -> dict:
    """The stage's held-out report of a trained tokenizer on `heldout`."""
    return evaluate(sp, hf_tok, Segmenter(tc.dictionary, "morpheme"), heldout, Segmenter(tc.dictionary, "bunsetsu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, nargs="+", required=True)
    ap.add_argument("--heldout", type=Path, nargs="+", required=True)
    ap.add_argument("--vocab-size", type=int, default=24000)
    ap.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    ap.add_argument("--granularities", default="none,morpheme,bunsetsu")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    train_lines, heldout = list(iter_lines(args.train, "text")), list(iter_lines(args.heldout, "text"))
    print(f"train: {len(train_lines):,} lines, {sum(map(len, train_lines)):,} chars; held-out: {len(heldout):,} "
          f"lines, {sum(map(len, heldout)):,} chars; {args.model_type} {args.vocab_size:,}\n")
    print("| granularity | ja chars/token | en chars/token | ja tokens crossing morphemes | ja tokens crossing "
          "bunsetsu | round-trip failures (SP / HF) | HF != SP ids | training s |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for granularity in args.granularities.split(","):
            tc = TokenizerConfig(granularity=granularity, model_type=args.model_type, vocab_size=args.vocab_size,
                                 num_workers=args.workers)
            t0 = time.perf_counter()
            sp, hf_tok, seconds = build(tc, train_lines, Path(tmp) / granularity)
            r = {**measure(tc, sp, hf_tok, heldout), "training_seconds": seconds}
            ja, en = r["languages"]["ja"], r["languages"].get("en", {})
            print(f"| {granularity} | {ja['chars_per_token']} | {en.get('chars_per_token')} | "
                  f"{ja['boundary_crossing_rate']:.2%} | {ja['bunsetsu_crossing_rate']:.2%} | "
                  f"{r['round_trip_failures']} / {r['hf_round_trip_failures']} | {r['hf_sp_id_mismatches']} | "
                  f"{r['training_seconds']:.0f} (all {time.perf_counter() - t0:.0f}) |", flush=True)


if __name__ == "__main__":
    main()
