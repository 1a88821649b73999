"""llama.cpp reads the exports as transformers does: its own converter (`convert_hf_to_gguf.py`) writes an f32
GGUF, and `scripts/compare_llama_cpp.py` compares ids, logits and end tokens. Runs when the build of
`scripts/build_llama_cpp.sh` is present (the build takes ~15 minutes on 2 cores, too slow for every CI run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.convert.conftest import export_tiny_models
from tests.tokenizer.conftest import fixture_lines, train

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import compare_llama_cpp  # noqa: E402

BUILD = compare_llama_cpp.HOME / f"llama_cpp_python-{compare_llama_cpp.VERSION}" / "vendor" / "llama.cpp" / "build"
pytestmark = pytest.mark.skipif(not (BUILD / "bin").is_dir(),
                                reason="no llama.cpp build (bash scripts/build_llama_cpp.sh builds it)")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """Tokenizers trained on half the fixture lines (unigram and BPE), tiny dense and MoE exports with each,
    and llama.cpp's view of every export on the other, held-out half."""
    root = tmp_path_factory.mktemp("llama-cpp")
    lines = fixture_lines()
    corpus, heldout = root / "train.txt", root / "heldout.txt"
    corpus.write_text("\n".join(lines[0::2] * 3) + "\n", encoding="utf-8")
    heldout.write_text("\n".join(lines[1::2]) + "\n", encoding="utf-8")
    out = {}
    for model_type in ("bpe", "unigram"):
        train([corpus], root / f"tok-{model_type}", model_type=model_type, vocab_size=800)
        for arch, folder in export_tiny_models(root / model_type, root / f"tok-{model_type}").items():
            report = root / f"{model_type}-{arch}.json"
            proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_llama_cpp.py"), str(folder),
                                   "--lines", str(heldout), "--out", str(report)],
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            out[f"{model_type}-{arch}"] = {**json.loads(report.read_text(encoding="utf-8")),
                                           "card": (folder / "README.md").read_text(encoding="utf-8")}
    return out


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_bpe_export_gives_transformers_ids_and_logits_in_llama_cpp(reports, arch):
    report = reports[f"bpe-{arch}"]
    mismatched = [s["text"] for s in report["strings"] if s["transformers"] != s["llama_cpp"]]
    assert not mismatched, mismatched
    assert report["llama_tokenize_agrees"]  # the command-line tool and the library tokenize alike
    assert report["lines"] >= 90 and report["lines_identical"] == report["lines"]
    assert report["max_abs_logit_diff"] <= 1e-5, report["max_abs_logit_diff"]
    assert "tokenizes as training did" in report["card"]  # the model card says what GGUF users get


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_chat_markers_are_control_tokens_and_documents_end_generation(reports, model_type):
    report = reports[f"{model_type}-llama"]
    assert all(m["control"] for m in report["markers"].values()), report["markers"]
    assert report["markers"]["<EOD>"]["end_of_generation"]
    assert report["markers"]["<|im_end|>"]["end_of_generation"]
    chat = next(s for s in report["strings"] if s["text"].startswith("<|im_start|>"))
    ids = {m["id"] for m in report["markers"].values()}
    turns = [i for i in chat["transformers"] if i in ids]
    assert len(turns) == 4 and [i for i in chat["llama_cpp"] if i in ids] == turns  # one id per marker


def test_unigram_export_keeps_its_logits_in_llama_cpp(reports):
    """Unigram ids are approximate in llama.cpp (its SPM path merges greedily); the weights are still exact."""
    report = reports["unigram-mixtral"]
    assert report["max_abs_logit_diff"] <= 1e-5, report["max_abs_logit_diff"]
    assert report["tokens_llama_cpp"] >= report["tokens_transformers"]
    assert "tokenizer.model_type=bpe" in report["card"]
