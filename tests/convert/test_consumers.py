"""Exports read the same way by every transformers version users run: 4.57 (installed from PyPI into a cache
folder, in a subprocess) and the project's 5.x give the SentencePiece ids and the same logits; base models end
generation at the document separator, and the tokenizer files state their BOS/prefix-space behaviour."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.convert.conftest import export_tiny_models
from tests.tokenizer.conftest import TRICKY, fixture_lines, train

ROOT = Path(__file__).resolve().parents[2]
TRANSFORMERS_4 = ("transformers==4.57.1", "tokenizers>=0.22,<0.23", "huggingface_hub>=0.34,<1.0")
CACHE = ROOT / ".cache" / "transformers-4.57"
"""The 4.x install (git-ignored), put before the project's packages on PYTHONPATH; torch and the rest are shared."""
STRINGS = ["Hello world", "日本の首都は東京です。", *TRICKY]

CONSUMER = r"""
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
folders, strings = json.loads(sys.argv[1]), json.loads(sys.argv[2])
read = {}
for arch, folder in folders.items():
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32).eval()
    ids = [tok.encode(s, add_special_tokens=True) for s in strings]
    with torch.no_grad():
        logits = model(torch.tensor([ids[1][:24]])).logits[0].tolist()
    read[arch] = {"version": transformers.__version__, "ids": ids, "logits": logits,
                  "rope_theta": getattr(model.config, "rope_theta", None)
                  or model.config.rope_parameters["rope_theta"]}
print(json.dumps(read))
"""
"""Reads every export in one interpreter (one start-up per transformers version), each from its own folder."""
ARCHS = ("llama", "mixtral")


@pytest.fixture(scope="module")
def transformers4() -> Path:
    marker = CACHE / "transformers-4.57.1.dist-info"
    if not marker.is_dir():
        # --no-compile: the consumer imports a few dozen of the ~2,000 modules pip would compile (~7 -> ~2 s)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                               str(CACHE), *TRANSFORMERS_4], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 and re.search(r"(?i)connection|resolve|network|timed out|Could not find", proc.stderr):
            pytest.skip(f"package registry unreachable: {proc.stderr.strip().splitlines()[-1]}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    return CACHE


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A trained SentencePiece tokenizer (the tokenizer stage) and a dense and an MoE checkpoint exported with it."""
    root = tmp_path_factory.mktemp("consumers")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(fixture_lines() * 3) + "\n", encoding="utf-8")
    tokenizer = root / "tokenizer"
    train([corpus], tokenizer)
    return {**export_tiny_models(root, tokenizer), "tokenizer": tokenizer}


def _consume(folders: dict[str, Path], pythonpath: Path | None) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath or ""), str(ROOT)]))}
    argv = [json.dumps({arch: str(folder) for arch, folder in folders.items()}), json.dumps(STRINGS)]
    proc = subprocess.run([sys.executable, "-c", CONSUMER, *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def consumed(exports, transformers4) -> dict[str, dict[str, dict]]:
    """What transformers 4.x ("old") and the project's 5.x ("new") read from each export."""
    folders = {arch: exports[arch] for arch in ARCHS}
    return {"old": _consume(folders, transformers4), "new": _consume(folders, None)}


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_4_and_5_read_the_export_alike(exports, consumed, arch):
    import sentencepiece as spm

    old, new = consumed["old"][arch], consumed["new"][arch]
    assert old["version"] == "4.57.1" and new["version"].startswith("5.")
    sp = spm.SentencePieceProcessor(model_file=str(exports["tokenizer"] / "tokenizer.model"))
    assert new["ids"][:2] == [sp.encode(s) for s in STRINGS[:2]]  # plain text: no BOS, no added space
    assert old["ids"] == new["ids"]
    assert old["rope_theta"] == new["rope_theta"] == 10000.0
    diff = (torch.tensor(old["logits"]) - torch.tensor(new["logits"])).abs().max().item()
    assert diff <= 1e-5, diff


def test_base_export_ends_documents_and_states_its_tokenizer_flags(exports):
    folder = exports["llama"]
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    assert model["type"] == "BPE"  # the tokenizer stage's default
    ids = model["vocab"]
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == ids["<EOD>"]  # the document separator is a base model's EOS
    assert json.loads((folder / "config.json").read_text())["eos_token_id"] == ids["<EOD>"]
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["add_bos_token"], config["add_eos_token"], config["add_prefix_space"]) == (False, False, False)
    assert config["eos_token"] == "<EOD>"
    decoder = {v["content"]: v["special"] for v in config["added_tokens_decoder"].values()}
    assert all(decoder[t] for t in ("<s>", "</s>", "<EOD>", "<|im_start|>", "<|im_end|>"))
    assert decoder["\n"] is False
    assert config["additional_special_tokens"] == ["<EOD>", "<|im_start|>", "<|im_end|>"]
    assert "transformers 4.x" in (folder / "README.md").read_text(encoding="utf-8")  # the card names its consumers
