"""An exported HF folder as llama.cpp reads it, against stock transformers (the check of `export.gguf`).

Converts the folder with llama.cpp's own converter (`convert_hf_to_gguf.py`, f32) into a temporary folder and
compares token ids of fixed strings and of text lines, the logits of one sequence, and which tokens llama.cpp
treats as control tokens and as end of generation (factory/convert/gguf.py). Prints one JSON report (also
written to --out); the folder is left as it was.

    .venv/bin/python scripts/compare_llama_cpp.py runs/demo-cpu/export/hf --lines heldout.txt

Needs the build of `scripts/build_llama_cpp.sh` (in .cache/llama.cpp, or the folder `--llama-cpp` names).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from factory.errors import FactoryError
from factory.convert.gguf import HOME, VERSION, compare, convert, llama_cpp_source


def report(folder: Path, lines: list[str], home: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="gguf-") as tmp:
        gguf = Path(tmp) / "model-f32.gguf"
        convert(folder, gguf, llama_cpp_source(home))
        result = compare(folder, gguf, lines, home)
    return {"folder": str(folder), "llama_cpp_python": VERSION, **dataclasses.asdict(result),
            "strings_identical": result.strings_identical, "llama_tokenize_agrees": result.llama_tokenize_agrees}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="exported HF folder (config.json, safetensors, tokenizer files)")
    parser.add_argument("--lines", type=Path, help="text file: each non-empty line is compared as one text")
    parser.add_argument("--max-lines", type=int, default=600)
    parser.add_argument("--llama-cpp", type=Path, default=HOME, help=f"build folder (default {HOME})")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    lines = []
    if args.lines:
        lines = [s for s in args.lines.read_text(encoding="utf-8").split("\n") if s.strip()][:args.max_lines]
    try:
        text = json.dumps(report(args.folder, lines, args.llama_cpp), ensure_ascii=False)
    except FactoryError as e:
        raise SystemExit(f"compare_llama_cpp: {e}") from None
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
