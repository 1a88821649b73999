"""Throughput of the pack stage's tokenizing loop on one JSONL file: prints documents, tokens, seconds, tokens/s.

    .venv/bin/python scripts/bench_pack.py CORPUS.jsonl TOKENIZER_DIR [--workers 2] [--docs-per-task 512]

Times factory.data.pack.pack_records alone (worker start-up, parsing, tokenizing, writing .bin/.idx), not the
interpreter's imports; `python -m factory.stage pack ...` gives the end-to-end figure. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="JSONL file")
    ap.add_argument("tokenizer_dir", type=Path, help="folder with tokenizer.model")
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--docs-per-task", type=int, default=512)
    args = ap.parse_args()

    from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer
    from factory.data.pack import pack_records

    model = args.tokenizer_dir / "tokenizer.model"
    tok = SentencePieceMegatronTokenizer(model)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        counts = pack_records(args.corpus, args.text_field, Path(tmp) / "bench_text_document", model,
                            tok.vocab_size, tok.eod, args.workers, args.docs_per_task)
        seconds = time.perf_counter() - t0
    mb = args.corpus.stat().st_size / 1e6
    print(f"{args.corpus.name}: {mb:.1f} MB, {counts['documents']} documents, {counts['tokens']} tokens, "
          f"{args.workers} workers, {seconds:.2f} s, {counts['tokens'] / seconds:,.0f} tokens/s")


if __name__ == "__main__":
    main()
