"""Load an exported HF folder with stock transformers (no remote code) and sample a few tokens (seeded).

Usage: python scripts/demo_generate.py HF_DIR [--prompt TEXT] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir")
    parser.add_argument("--prompt", default="日本の首都は")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.hf_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(args.hf_dir, local_files_only=True, dtype=torch.float32)
    ids = tok(args.prompt, return_tensors="pt")
    with torch.no_grad():
        torch.manual_seed(0)  # a tiny demo model's greedy output is mostly whitespace; sampling shows more
        out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=True, top_k=50,
                             temperature=0.8, repetition_penalty=1.3)
    new = out[0, ids["input_ids"].shape[1]:]
    print(f"{type(model).__name__} from {args.hf_dir}: {args.prompt!r} -> {tok.decode(new, skip_special_tokens=True)!r} "
          f"({len(new)} new tokens)")
    return 0 if len(new) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
