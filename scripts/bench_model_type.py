"""Benchmark (not a test): unigram vs BPE at equal vocabulary, data and granularity, on held-out halves.

    .venv/bin/python scripts/bench_model_type.py --train data/tok/train/ja.txt data/tok/train/en.txt \
        --half tune data/tok/heldout/tune_ja.txt data/tok/heldout/tune_en.txt \
        --half heldout data/tok/heldout/heldout_ja.txt data/tok/heldout/heldout_en.txt [--vocab-size 24000]

Trains each model type on the --train lines with the stage's own functions (MeCab pretokenization,
SentencePiece training, HF export; scripts/bench_granularity.py `build`) and evaluates every line of each
named half as the stage's report does. Prints, per half, the table of docs/stages/tokenizer.md (chars per
token by language, morpheme crossing, round trip, HF-vs-SentencePiece ids) and where the crossing comes from
(share of all tokens by what the crossing token is made of, and the pieces that cross most often).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_granularity import build, measure
from tokenizer.config import TokenizerConfig
from tokenizer.corpus import iter_lines


def table(half: str, reports: dict[str, dict]) -> None:
    print(f"\n{half}: {next(iter(reports.values()))['lines']:,} lines\n")
    print("| model | ja chars/token | en chars/token | tokens crossing a MeCab boundary (all / ja) | "
          "round-trip failures (SP / HF) | HF ids != SentencePiece |\n|---|---|---|---|---|---|")
    base = None
    for model_type, r in reports.items():
        ja, en = r["languages"]["ja"], r["languages"]["en"]
        gain = "" if base is None else (f" ({ja['chars_per_token'] / base[0] - 1:+.1%})",
                                        f" ({en['chars_per_token'] / base[1] - 1:+.1%})")
        base = base or (ja["chars_per_token"], en["chars_per_token"])
        print(f"| {model_type} | {ja['chars_per_token']:.3f}{gain[0] if gain else ''} | "
              f"{en['chars_per_token']:.3f}{gain[1] if gain else ''} | {r['boundary_crossing_rate']:.2%} / "
              f"{ja['boundary_crossing_rate']:.2%} | {r['round_trip_failures']} / {r['hf_round_trip_failures']} | "
              f"{r['hf_sp_id_mismatches']} of {r['lines']:,} lines |")
    for model_type, r in reports.items():
        kinds = ", ".join(f"{kind} {share:.2%}" for kind, share in r["crossing_by_kind"].items())
        pieces = ", ".join(f"{piece!r} {n}" for piece, n in r["crossing_pieces"].items())
        print(f"\n{model_type} crossing by kind (share of all tokens): {kinds or 'none'}\n"
              f"{model_type} pieces crossing most often: {pieces or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, nargs="+", required=True)
    ap.add_argument("--half", nargs="+", action="append", required=True, metavar=("NAME", "FILE"),
                    help="a named held-out half and its text files (repeat for each half)")
    ap.add_argument("--vocab-size", type=int, default=24000)
    ap.add_argument("--granularity", default="morpheme")
    ap.add_argument("--model-types", default="unigram,bpe")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    train_lines = list(iter_lines(args.train, "text"))
    halves = {name: list(iter_lines(map(Path, files), "text")) for name, *files in args.half}
    print(f"train: {len(train_lines):,} lines, {sum(map(len, train_lines)):,} chars; vocab {args.vocab_size:,}, "
          f"granularity {args.granularity}")
    reports: dict[str, dict[str, dict]] = {name: {} for name in halves}
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in args.model_types.split(","):
            tc = TokenizerConfig(model_type=model_type, vocab_size=args.vocab_size, granularity=args.granularity,
                                 num_workers=args.workers)
            sp, hf_tok, seconds = build(tc, train_lines, Path(tmp) / model_type)
            print(f"{model_type}: trained in {seconds:.0f} s", flush=True)
            for name, lines in halves.items():
                reports[name][model_type] = measure(tc, sp, hf_tok, lines)
    for name, by_model in reports.items():
        table(name, by_model)


if __name__ == "__main__":
    main()
