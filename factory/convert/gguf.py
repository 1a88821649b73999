"""An HF folder as llama.cpp reads it: converted with llama.cpp's own `convert_hf_to_gguf.py` (f32) from the
pinned build of scripts/build_llama_cpp.sh, then checked against transformers like the HF export is checked
against the checkpoint: token ids on held-out lines and fixed strings, logits on a probe, control and
end-of-generation flags. `verdict` refuses a GGUF that would not serve the model as it was trained.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.errors import ConfigError, VerificationError

log = logging.getLogger(__name__)

VERSION = "0.3.36"
"""llama-cpp-python release whose vendored llama.cpp scripts/build_llama_cpp.sh builds."""
HOME = Path(__file__).resolve().parents[2] / ".cache" / "llama.cpp"
GGUF_NAME = "model-f32.gguf"
STRINGS = ["Hello world", "日本の首都は東京です。", " leading space", "文書A<EOD>文書B",
           "<|im_start|>user\n日本の首都は？<|im_end|>\n<|im_start|>assistant\n東京です。<|im_end|>\n",
           "全角ＡＢＣ１２３と半角ABC123", "絵文字😀🎉と鬱蘊齟齬", "Pi is 3.14159, 2024年4月1日"]
"""Fixed strings every comparison includes: spaces, special and chat tokens, widths, emoji, rare kanji, digits."""
MARKERS = ("<EOD>", "<|im_start|>", "<|im_end|>")
PROBE_TOKENS = 32


def llama_cpp_source(home: Path | None = None) -> Path:
    """The built llama.cpp source tree (converter, gguf-py, build/bin) under `home` (default HOME); a
    ConfigError saying how to build it."""
    home = home or HOME
    llama = home / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    if not (llama / "build" / "bin" / "llama-tokenize").is_file():  # the build's last target
        raise ConfigError(f"export.gguf: no llama.cpp build in {home} (`bash scripts/build_llama_cpp.sh` builds "
                          f"llama.cpp {VERSION} there, ~15 min on 2 cores)")
    return llama


def built(home: Path | None = None) -> bool:
    """Whether the pinned llama.cpp build is there."""
    try:
        llama_cpp_source(home)
    except ConfigError:
        return False
    return True


def convert(folder: Path, gguf: Path, llama: Path) -> None:
    """llama.cpp's converter, f32, as its users run it."""
    env = {**os.environ, "PYTHONPATH": str(llama / "gguf-py")}
    proc = subprocess.run([sys.executable, str(llama / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f32",
                           "--outfile", str(gguf)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise VerificationError(f"export.gguf: convert_hf_to_gguf.py failed on {folder} ({last}); nothing was written")


def llama_tokenize(llama: Path, gguf: Path, text: str) -> list[int]:
    """The ids llama.cpp's `llama-tokenize` prints for `text` (BOS as the GGUF asks, special tokens parsed)."""
    proc = subprocess.run([str(llama / "build" / "bin" / "llama-tokenize"), "-m", str(gguf), "--stdin", "--no-escape",
                           "--ids", "--log-disable"], input=text.encode("utf-8"), capture_output=True)
    if proc.returncode != 0:
        raise VerificationError(f"export.gguf: llama-tokenize failed on {gguf}: "
                                f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def load_llama(llama: Path, home: Path, gguf: Path):
    """The llama-cpp-python bindings of the pinned sdist on its own built library, and the GGUF loaded in f32."""
    os.environ["LLAMA_CPP_LIB_PATH"] = str(llama / "build" / "bin")
    for path in (str(home / "site"), str(llama.parents[1])):
        if path not in sys.path:
            sys.path.insert(0, path)
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), n_ctx=2 * PROBE_TOKENS, n_batch=2 * PROBE_TOKENS, logits_all=True,
                          n_threads=2, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)  # f16 by default
    return llama_cpp, llm


@dataclass
class Comparison:
    """llama.cpp against transformers on one GGUF."""

    lines: int
    lines_identical: int
    strings: list[dict[str, Any]]
    max_abs_logit_diff: float
    tokens_transformers: int = 0
    tokens_llama_cpp: int = 0
    markers: dict[str, dict[str, Any]] = field(default_factory=dict)
    end_of_generation_ids: list[int] = field(default_factory=list)
    mismatched_examples: list[str] = field(default_factory=list)

    @property
    def strings_identical(self) -> int:
        return sum(s["transformers"] == s["llama_cpp"] for s in self.strings)

    @property
    def llama_tokenize_agrees(self) -> bool:
        """llama.cpp's command-line tokenizer gives the library's ids on the fixed strings."""
        return all(s["llama_tokenize"] == s["llama_cpp"] for s in self.strings)

    @property
    def differing_share(self) -> float:
        """Share of lines and fixed strings whose ids differ."""
        total = self.lines + len(self.strings)
        return (total - self.lines_identical - self.strings_identical) / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        return {"llama_cpp_python": VERSION, "lines": self.lines, "lines_identical": self.lines_identical,
                "strings": len(self.strings), "strings_identical": self.strings_identical,
                "tokens_transformers": self.tokens_transformers, "tokens_llama_cpp": self.tokens_llama_cpp,
                "max_abs_logit_diff": self.max_abs_logit_diff}


def compare(folder: Path, gguf: Path, lines: list[str], home: Path | None = None) -> Comparison:
    """Ids of every line and fixed string, the probe's logits, and the marker flags, llama.cpp vs transformers."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from factory.convert.verify import hf_logits

    llama = llama_cpp_source(home)
    lib, llm = load_llama(llama, home or HOME, gguf)
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)

        def both(text: str) -> tuple[list[int], list[int]]:
            return tok.encode(text), llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

        strings = [{"text": s, "transformers": h, "llama_cpp": g, "llama_tokenize": llama_tokenize(llama, gguf, s)}
                   for s in STRINGS for h, g in [both(s)]]
        pairs = [both(line) for line in lines]
        vocab, ids = llm._model.vocab, tok.get_vocab()
        markers = {m: {"id": ids[m], "control": bool(lib.llama_vocab_is_control(vocab, ids[m])),
                       "end_of_generation": bool(lib.llama_vocab_is_eog(vocab, ids[m]))} for m in MARKERS if m in ids}
        ends = [i for i in range(lib.llama_vocab_n_tokens(vocab)) if lib.llama_vocab_is_eog(vocab, i)]
        probe = next((h for h, _ in pairs if len(h) >= PROBE_TOKENS), strings[1]["transformers"])[:PROBE_TOKENS]
        llm.reset()
        llm.eval(probe)
        cpp_logits = torch.from_numpy(np.array(llm.scores[:len(probe)], dtype=np.float32))
    finally:
        llm.close()
    diff = (hf_logits(folder, torch.tensor([probe]))[0] - cpp_logits).abs().max().item()
    return Comparison(lines=len(lines), lines_identical=sum(h == g for h, g in pairs), strings=strings,
                      max_abs_logit_diff=diff, tokens_transformers=sum(len(h) for h, _ in pairs),
                      tokens_llama_cpp=sum(len(g) for _, g in pairs), markers=markers, end_of_generation_ids=ends,
                      mismatched_examples=[line for line, (h, g) in zip(lines, pairs) if h != g][:3])


def verdict(result: Comparison, tokenizer_type: str | None, tolerance: float, allow_mismatch: bool) -> str:
    """The line the model card and log carry; a VerificationError when the GGUF would not serve the model as
    trained: logits off (always), or ids that differ from transformers' unless `allow_mismatch`."""
    share = f"{result.differing_share:.1%} of {result.lines} held-out lines and {len(result.strings)} fixed strings"
    if not result.max_abs_logit_diff <= tolerance:
        raise VerificationError(f"export.gguf: max |logit difference| {result.max_abs_logit_diff:.3g} between "
                                f"llama.cpp and transformers > tolerance {tolerance:g}; nothing was written")
    flags = [m for m, f in result.markers.items() if not f["control"]]
    if flags:
        raise VerificationError(f"export.gguf: llama.cpp reads {', '.join(flags)} as text, not as control tokens; "
                                "nothing was written")
    checked = (f"llama.cpp {VERSION} (convert_hf_to_gguf.py, f32): max |logit diff| "
               f"{result.max_abs_logit_diff:.3g}, ids equal transformers' on {result.lines_identical}/{result.lines} "
               f"held-out lines and {result.strings_identical}/{len(result.strings)} fixed strings")
    if result.differing_share == 0:
        return checked
    if tokenizer_type == "Unigram":
        reason = (f"export.gguf: the tokenizer is Unigram and llama.cpp's SentencePiece path merges greedily by "
                  f"score instead of taking Unigram's best path: {share} get other ids than transformers")
        fix = "retrain the tokenizer with tokenizer.model_type=bpe"
    else:
        reason = f"export.gguf: {share} get other ids in llama.cpp than in transformers"
        fix = "check the tokenizer files"
    if not allow_mismatch:
        raise VerificationError(f"{reason} (e.g. {result.mismatched_examples[:1]}); {fix}, or set "
                                "export.gguf_allow_mismatch=true to write it anyway; nothing was written")
    log.warning("%s; written anyway (export.gguf_allow_mismatch=true)", reason)
    return f"{checked}; ids differ on {result.differing_share:.1%} (written with export.gguf_allow_mismatch=true)"


def export_gguf(folder: Path, lines: list[str], tokenizer_type: str | None, tolerance: float,
                allow_mismatch: bool, home: Path | None = None) -> tuple[str, Comparison]:
    """Write `folder/GGUF_NAME` and check it; on a refusal the GGUF is removed before the error propagates
    (the caller writes `folder` atomically, so nothing appears)."""
    gguf = folder / GGUF_NAME
    convert(folder, gguf, llama_cpp_source(home))
    try:
        result = compare(folder, gguf, lines, home)
        line = verdict(result, tokenizer_type, tolerance, allow_mismatch)
    except BaseException:
        gguf.unlink(missing_ok=True)
        raise
    log.info("export.gguf: %s", line)
    return line, result
