"""An exported HF folder as llama.cpp reads it, against stock transformers.

Converts the folder with llama.cpp's own converter (`convert_hf_to_gguf.py`, f32 GGUF), then compares the token
ids of fixed strings and of text lines (llama.cpp tokenizing as its tools do for a prompt: BOS if the GGUF asks
for one, special tokens parsed), the logits of one sequence, and reports which tokens llama.cpp treats as
control tokens and as end of generation. Prints one JSON report (also written to --out).

    .venv/bin/python scripts/compare_llama_cpp.py runs/demo-cpu/export/hf --lines heldout.txt

Needs the build of `scripts/build_llama_cpp.sh` (in .cache/llama.cpp, or the folder `--llama-cpp` names).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.3.36"
HOME = ROOT / ".cache" / "llama.cpp"
STRINGS = ["Hello world", "日本の首都は東京です。", " leading space", "文書A<EOD>文書B",
           "<|im_start|>user\n日本の首都は？<|im_end|>\n<|im_start|>assistant\n東京です。<|im_end|>\n",
           "全角ＡＢＣ１２３と半角ABC123", "絵文字😀🎉と鬱蘊齟齬", "Pi is 3.14159, 2024年4月1日"]
MARKERS = ("<EOD>", "<|im_start|>", "<|im_end|>")
PROBE_TOKENS = 32


def sdist(home: Path) -> Path:
    """The unpacked llama-cpp-python sdist whose vendor/llama.cpp was built."""
    src = home / f"llama_cpp_python-{VERSION}"
    if not (src / "vendor" / "llama.cpp" / "build" / "bin").is_dir():
        raise SystemExit(f"compare_llama_cpp: no llama.cpp build under {src}; run scripts/build_llama_cpp.sh")
    return src


def convert(folder: Path, gguf: Path, llama: Path) -> None:
    """llama.cpp's converter, f32, as its users run it."""
    env = {**os.environ, "PYTHONPATH": str(llama / "gguf-py")}
    proc = subprocess.run([sys.executable, str(llama / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f32",
                           "--outfile", str(gguf)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"compare_llama_cpp: convert_hf_to_gguf.py failed on {folder}:\n{proc.stderr[-3000:]}")


def llama_tokenize(llama: Path, gguf: Path, text: str) -> list[int]:
    """The ids llama.cpp's `llama-tokenize` prints for `text` (defaults: BOS as the GGUF says, specials parsed)."""
    proc = subprocess.run([str(llama / "build" / "bin" / "llama-tokenize"), "-m", str(gguf), "--stdin", "--no-escape",
                           "--ids", "--log-disable"], input=text.encode("utf-8"), capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"compare_llama_cpp: llama-tokenize failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def load_llama(src: Path, home: Path, gguf: Path):
    """The llama-cpp-python bindings of the sdist, on its own built library."""
    os.environ["LLAMA_CPP_LIB_PATH"] = str(src / "vendor" / "llama.cpp" / "build" / "bin")
    sys.path[:0] = [str(src), str(home / "site")]
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), n_ctx=2 * PROBE_TOKENS, n_batch=2 * PROBE_TOKENS, logits_all=True,
                          n_threads=2, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)  # f16 by default
    return llama_cpp, llm


def compare(folder: Path, lines: list[str], home: Path) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = sdist(home)
    with tempfile.TemporaryDirectory(prefix="gguf-") as tmp:
        gguf = Path(tmp) / "model-f32.gguf"
        convert(folder, gguf, src / "vendor" / "llama.cpp")
        lib, llm = load_llama(src, home, gguf)
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)

        def both(text: str) -> tuple[list[int], list[int]]:
            return tok.encode(text), llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

        strings = [{"text": s, "transformers": h, "llama_cpp": g,
                    "llama_tokenize": llama_tokenize(src / "vendor" / "llama.cpp", gguf, s)}
                   for s in STRINGS for h, g in [both(s)]]
        line_pairs = [both(line) for line in lines]
        vocab = llm._model.vocab
        vocab_ids = tok.get_vocab()
        markers = {m: {"id": vocab_ids[m], "control": bool(lib.llama_vocab_is_control(vocab, vocab_ids[m])),
                       "end_of_generation": bool(lib.llama_vocab_is_eog(vocab, vocab_ids[m]))}
                   for m in MARKERS if m in vocab_ids}
        end_ids = [i for i in range(lib.llama_vocab_n_tokens(vocab)) if lib.llama_vocab_is_eog(vocab, i)]

        probe = next((h for h, _ in line_pairs if len(h) >= PROBE_TOKENS), strings[1]["transformers"])[:PROBE_TOKENS]
        llm.reset()
        llm.eval(probe)
        cpp_logits = np.array(llm.scores[:len(probe)], dtype=np.float64)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        with torch.no_grad():
            hf_logits = model(torch.tensor([probe])).logits[0].double().numpy()
        llm.close()  # the model file lives in the temporary folder

    hf_tokens, cpp_tokens = sum(len(h) for h, _ in line_pairs), sum(len(g) for _, g in line_pairs)
    return {
        "folder": str(folder), "llama_cpp_python": VERSION,
        "strings_identical": sum(s["transformers"] == s["llama_cpp"] for s in strings),
        "llama_tokenize_agrees": all(s["llama_tokenize"] == s["llama_cpp"] for s in strings), "strings": strings,
        "lines": len(lines), "lines_identical": sum(h == g for h, g in line_pairs),
        "tokens_transformers": hf_tokens, "tokens_llama_cpp": cpp_tokens,
        "markers": markers, "end_of_generation_ids": end_ids,
        "probe_tokens": len(probe), "max_abs_logit_diff": float(np.abs(cpp_logits - hf_logits).max()),
        "max_abs_logit": float(np.abs(hf_logits).max()),
    }


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
    report = compare(args.folder, lines, args.llama_cpp)
    text = json.dumps(report, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
