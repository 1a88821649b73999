"""Tiny HF folders for post-training tests: our SentencePiece + chat-template tokenizer, Llama and Mixtral."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from factory.config import validate_config

DEMO_DATA = Path("configs/demo-data")
HF_SHAPES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256)
MOE = dict(num_local_experts=4, num_experts_per_tok=2)


def demo_text() -> list[str]:
    """Every string of the shipped demo data, to train the tokenizer on."""
    out = []
    for path in DEMO_DATA.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            out += _strings(json.loads(line))
    return out


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    return [s for v in items for s in _strings(v)]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """Our tokenizer recipe (SentencePiece BPE, byte fallback) exported with tokenizer/hf.py's chat template."""
    from tokenizer import hf
    from tokenizer.config import TokenizerConfig
    from tokenizer.train import train

    out = tmp_path_factory.mktemp("tok")
    text = out / "text.txt"
    text.write_text("\n".join(demo_text() * 3) + "\n", encoding="utf-8")
    tc = TokenizerConfig(inputs=[text], model_type="bpe", vocab_size=700, granularity="none",
                         character_coverage=1.0, num_workers=1)
    train(tc, text, out / "tokenizer")
    hf.export(out, tc.tokens)
    return out


def write_model(folder: Path, tokenizer_dir: Path, arch: str, seed: int = 0) -> Path:
    """A random tiny `arch` model with the test tokenizer's files beside it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    torch.manual_seed(seed)
    extra = MOE if arch == "mixtral" else {}
    config = AutoConfig.for_model(arch, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                  **HF_SHAPES, **extra)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("llama") / "hf", tokenizer_dir, "llama")


@pytest.fixture(scope="session")
def mixtral_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("mixtral") / "hf", tokenizer_dir, "mixtral")


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def post_config(run_dir: Path, **sections) -> object:
    """A validated CPU fp32 config with the given post-training sections."""
    return validate_config({"run": {"name": "test", "dir": str(run_dir)},
                            "runtime": {"device": "cpu", "precision": "fp32", "seed": 0}, **sections})


SFT_DATA = [{"path": str(DEMO_DATA / "sft.jsonl")}, {"path": str(DEMO_DATA / "sft-sharegpt.jsonl"), "weight": 2}]
DPO_DATA = [{"path": str(DEMO_DATA / "dpo.jsonl")}]
