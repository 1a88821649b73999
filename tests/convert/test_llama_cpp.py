"""GGUF exports: llama.cpp's own converter (`convert_hf_to_gguf.py`, f32) writes the GGUF beside the HF files and
factory/convert/gguf.py checks its ids, logits and end tokens against transformers, refusing a mismatch. The
refusal logic is tested everywhere; the conversions run where the build of `scripts/build_llama_cpp.sh` is
present (~15 minutes on 2 cores, too slow for every CI run: skipped there with that reason)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import validate_config
from factory.convert import gguf
from factory.convert.export import GgufCheck, export_checkpoint
from factory.errors import ConfigError, VerificationError
from factory.registry import STAGES
from factory.runtime.config import RuntimeConfig
from tests.conftest import TINY_DENSE
from tests.convert.conftest import export_tiny_models, save_megatron
from tests.tokenizer.conftest import fixture_lines, train

ROOT = Path(__file__).resolve().parents[2]
needs_build = pytest.mark.skipif(not gguf.built(), reason="no llama.cpp build in .cache/llama.cpp (bash "
                                 "scripts/build_llama_cpp.sh builds it, ~15 min on 2 cores; CI does not)")
CPU = RuntimeConfig(device="cpu", precision="fp32")


def _comparison(lines_identical: int, diff: float = 1e-6, control: bool = True) -> gguf.Comparison:
    strings = [{"text": s, "transformers": [1, 2], "llama_cpp": [1, 2], "llama_tokenize": [1, 2]} for s in "ab"]
    return gguf.Comparison(lines=100, lines_identical=lines_identical, strings=strings, max_abs_logit_diff=diff,
                           markers={"<|im_end|>": {"id": 6, "control": control, "end_of_generation": True}},
                           mismatched_examples=["日本語の行"])


def test_the_verdict_refuses_what_llama_cpp_would_not_serve_as_trained(caplog):
    assert gguf.verdict(_comparison(100), "BPE", 1e-4, False).endswith("ids equal transformers' on 100/100 "
                                                                       "held-out lines and 2/2 fixed strings")
    with pytest.raises(VerificationError) as refused:
        gguf.verdict(_comparison(40), "Unigram", 1e-4, False)
    message = str(refused.value)
    assert "Unigram" in message and "58.8% of 100 held-out lines and 2 fixed strings" in message
    assert "tokenizer.model_type=bpe" in message and "export.gguf_allow_mismatch=true" in message
    assert message.endswith("nothing was written")
    with caplog.at_level(logging.WARNING, logger="factory.convert.gguf"):
        line = gguf.verdict(_comparison(40), "Unigram", 1e-4, True)
    assert line.endswith("ids differ on 58.8% (written with export.gguf_allow_mismatch=true)")
    assert [r.getMessage() for r in caplog.records if "58.8%" in r.getMessage()]  # the share is printed
    with pytest.raises(VerificationError, match="other ids in llama.cpp than in transformers"):
        gguf.verdict(_comparison(99), "BPE", 1e-4, False)
    with pytest.raises(VerificationError, match=r"max \|logit difference\| 0.01 .* > tolerance 0.0001"):
        gguf.verdict(_comparison(100, diff=0.01), "BPE", 1e-4, True)  # weights off: never written
    with pytest.raises(VerificationError, match="reads <\\|im_end\\|> as text"):
        gguf.verdict(_comparison(100, control=False), "BPE", 1e-4, True)


def test_export_gguf_needs_the_build_and_held_out_text(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "HOME", tmp_path / "no-build")
    raw = {"run": {"name": "t", "dir": str(tmp_path / "run")},
           "export": {"checkpoint": str(tmp_path), "tokenizer_dir": str(tmp_path), "gguf": True}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    assert info.value.problems == ["<config>: export.gguf_text=[]: required with export.gguf=true: held-out text "
                                   "files whose lines llama.cpp's ids are checked on"]
    raw["export"]["gguf_text"] = [str(tmp_path)]
    with pytest.raises(ConfigError) as info:
        STAGES["export"].plan(validate_config(raw))
    assert info.value.problems == [f"export.gguf: no llama.cpp build in {tmp_path / 'no-build'} (`bash "
                                   "scripts/build_llama_cpp.sh` builds llama.cpp 0.3.36 there, ~15 min on 2 cores)"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """Tokenizers trained on half the fixture lines (BPE, the default, and unigram), tiny dense and MoE exports
    with a verified GGUF checked on the other, held-out half; the unigram export refused, then allowed."""
    root = tmp_path_factory.mktemp("llama-cpp")
    lines = fixture_lines()
    corpus, heldout = root / "train.txt", root / "heldout.txt"
    corpus.write_text("\n".join(lines[0::2] * 3) + "\n", encoding="utf-8")
    heldout.write_text("\n".join(lines[1::2]) + "\n", encoding="utf-8")
    check = GgufCheck(lines=lines[1::2])
    out: dict = {"heldout": heldout}
    train([corpus], root / "tok-bpe", vocab_size=800)
    out.update(export_tiny_models(root / "bpe", root / "tok-bpe", gguf=check))
    train([corpus], root / "tok-unigram", model_type="unigram", vocab_size=800)
    checkpoint = save_megatron(root / "unigram-ckpt", TINY_DENSE, vocab_size=1024)
    try:
        export_checkpoint(checkpoint, root / "unigram-refused", runtime_cfg=CPU, tokenizer_dir=root / "tok-unigram",
                          gguf=check)
    except VerificationError as e:
        out["unigram_refused"] = str(e)
    out["unigram"] = export_checkpoint(checkpoint, root / "unigram", runtime_cfg=CPU,
                                       tokenizer_dir=root / "tok-unigram",
                                       gguf=GgufCheck(lines=lines[1::2], allow_mismatch=True))
    out["unigram_folder"] = root / "unigram"
    out["unigram_refused_folder"] = root / "unigram-refused"
    return out


@needs_build
@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_bpe_gguf_gives_transformers_ids_and_logits_and_the_card_says_so(exports, arch):
    folder = exports[arch]
    assert (folder / gguf.GGUF_NAME).stat().st_size > 0
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "- model-f32.gguf: llama.cpp 0.3.36 (convert_hf_to_gguf.py, f32)" in card
    assert "held-out lines and 8/8 fixed strings" in card and "tokenizes as training did" in card
    report = _cli_report(folder, exports["heldout"])
    assert report["lines"] >= 90 and report["lines_identical"] == report["lines"]
    assert report["strings_identical"] == 8 and report["llama_tokenize_agrees"]
    assert report["max_abs_logit_diff"] <= 1e-5, report["max_abs_logit_diff"]
    assert all(m["control"] for m in report["markers"].values()), report["markers"]
    assert report["markers"]["<EOD>"]["end_of_generation"] and report["markers"]["<|im_end|>"]["end_of_generation"]
    chat = next(s for s in report["strings"] if s["text"].startswith("<|im_start|>"))
    ids = {m["id"] for m in report["markers"].values()}
    turns = [i for i in chat["transformers"] if i in ids]
    assert len(turns) == 4 and [i for i in chat["llama_cpp"] if i in ids] == turns  # one id per marker


@needs_build
def test_unigram_gguf_is_refused_with_the_share_unless_allowed(exports):
    assert "the tokenizer is Unigram" in exports["unigram_refused"] and "tokenizer.model_type=bpe" in \
        exports["unigram_refused"]
    assert not exports["unigram_refused_folder"].exists()  # nothing was written
    figures = exports["unigram"].gguf
    assert figures["lines_identical"] < figures["lines"] and figures["max_abs_logit_diff"] <= 1e-5
    card = (exports["unigram_folder"] / "README.md").read_text(encoding="utf-8")
    assert "written with export.gguf_allow_mismatch=true" in card and "tokenizer.model_type=bpe" in card


def _cli_report(folder: Path, heldout: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_llama_cpp.py"), str(folder),
                           "--lines", str(heldout)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
