"""Tiny Hugging Face folders (all four architectures), tokenizers and Megatron checkpoints, built offline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

HF_COMMON = dict(vocab_size=250, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                 rope_parameters={"rope_type": "default", "rope_theta": 50000.0})
HF_ARCHS = {
    "llama": {},
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64, qkv_bias=False, norm_topk_prob=True),
}


def write_tokenizer(folder: Path, size: int = 200) -> Path:
    """A word-level HF tokenizer with `size` ids, special tokens and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(size - len(specials))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}</s>{% endfor %}"
    tok.save_pretrained(folder)
    return folder


def write_hf_model(folder: Path, arch: str, seed: int = 0, tokenizer_size: int = 200, **overrides) -> Path:
    """A random tiny HF model of `arch` (norms perturbed too, so no weight is trivially 1) + tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(arch, **{**HF_COMMON, **HF_ARCHS[arch], **overrides})
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder, **({"max_shard_size": "100KB"} if overrides.pop("_sharded", False) else {}))
    write_tokenizer(folder, tokenizer_size)
    return folder


def save_megatron(root: Path, base: dict, **model_overrides) -> Path:
    """A randomly initialised Megatron checkpoint of a tests/conftest.py tiny config, saved at TP=1."""
    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint import save
    from tests.conftest import make_config

    raw = copy.deepcopy(base)
    raw["model"].update(model_overrides)
    cfg = make_config(raw)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        model = build_gpt_model(cfg.model, rt)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "layernorm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        save(root, 1, model, cfg.model, rt)
    return root


def export_tiny_models(root: Path, tokenizer: Path, **export_options) -> dict[str, Path]:
    """A dense and an MoE tiny checkpoint (random, TP=1) exported to HF folders with `tokenizer`'s files:
    {"llama": folder, "mixtral": folder}; `export_options` go to export_checkpoint."""
    from factory.convert.export import export_checkpoint
    from factory.runtime.config import RuntimeConfig
    from tests.conftest import TINY_DENSE, TINY_MOE

    cpu = RuntimeConfig(device="cpu", precision="fp32")
    out = {}
    for name, base in (("llama", TINY_DENSE), ("mixtral", TINY_MOE)):
        save_megatron(root / f"{name}-ckpt", base, vocab_size=1024)
        export_checkpoint(root / f"{name}-ckpt", root / name, runtime_cfg=cpu, tokenizer_dir=tokenizer,
                          **export_options)
        out[name] = root / name
    return out


@pytest.fixture
def tokenizer_dir(tmp_path) -> Path:
    return write_tokenizer(tmp_path / "tokenizer")
