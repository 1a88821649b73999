"""Benchmark (not a test): the compression gain of vocabulary extension (hf_import.extend_vocab) on held-out text.

    .venv/bin/python scripts/bench_vocab.py BASE_TOKENIZER.model JAPANESE_TOKENIZER_DIR --text FILE [FILE ...] \
        [--max-new-pieces 16000 ...]

Builds a tiny Llama HF folder around BASE_TOKENIZER.model (a Llama-2-style SentencePiece BPE model, e.g. the
Mistral 7B v0.1 tokenizer that mistral-common ships; its tokenizer.json is made as Llama-2's own: "▁"
prepended, spaces replaced, BPE with byte fallback) and runs the import stage with extend_vocab for each
--max-new-pieces value, printing the manifest's figures (the model is tiny: only the tokenizer figures and
the verification matter).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def base_folder(model_file: Path, folder: Path) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder.mkdir(parents=True)
    (folder / "tokenizer.model").write_bytes(model_file.read_bytes())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = None
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "TokenizersBackend"}))
    size = spm.SentencePieceProcessor(model_file=str(model_file)).get_piece_size()
    torch.manual_seed(0)
    llama = AutoConfig.for_model("llama", vocab_size=size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    AutoModelForCausalLM.from_config(llama).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base_model", type=Path, help="SentencePiece BPE tokenizer.model of the model to extend")
    ap.add_argument("japanese", type=Path, help="folder with the Japanese tokenizer.model")
    ap.add_argument("--text", type=Path, nargs="+", required=True, help="held-out text")
    ap.add_argument("--max-new-pieces", type=int, nargs="+", default=[16000])
    ap.add_argument("--max-lines", type=int, default=20000)
    args = ap.parse_args()

    from factory.config import validate_config
    from factory.runner import run_stage
    from factory.registry import STAGES

    print("| max new pieces | added | vocab | chars/token before -> after | ja chars/token before -> after | "
          "lines using new pieces | base HF != SP lines | max logit diff (old ids) | extension s |\n"
          "|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = base_folder(args.base_model, Path(tmp) / "base")
        for budget in args.max_new_pieces:
            run = Path(tmp) / f"run-{budget}"
            extend = {"tokenizer_dir": str(args.japanese), "max_new_pieces": budget,
                      "text": [str(p) for p in args.text], "max_lines": args.max_lines}
            cfg = validate_config({"run": {"name": "vocab", "dir": str(run)},
                                   "runtime": {"device": "cpu", "precision": "fp32"},
                                   "hf_import": {"hf_dir": str(hf_dir), "extend_vocab": extend}})
            m = run_stage(STAGES["import"], cfg).metrics
            print(f"| {budget:,} | {m['vocab_added']:,} | {m['vocab_base']:,} -> {m['vocab_extended']:,} | "
                  f"{m['chars_per_token_before']} -> {m['chars_per_token_after']} | "
                  f"{m['ja_chars_per_token_before']} -> {m['ja_chars_per_token_after']} | "
                  f"{m['lines_with_new_pieces']:,} of {m['lines_checked']:,} | {m['base_hf_sp_mismatches']:,} | "
                  f"{m['max_abs_logit_diff_old_ids']:.2g} | "
                  f"{m['extend_seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
