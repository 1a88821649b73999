"""HF -> Megatron -> HF gives bit-identical tensors; Megatron -> HF matches logits; outputs load and generate."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from factory.convert.config import ProbeConfig
from factory.convert.export import export_checkpoint
from factory.convert.hf_import import import_hf
from factory.convert.verify import hf_logits
from factory.runtime.config import RuntimeConfig
from factory.train.checkpoint import read_info
from tests.conftest import TINY_DENSE, TINY_MOE
from tests.convert.conftest import save_megatron, write_hf_model

CPU = RuntimeConfig(device="cpu", precision="fp32")


def _tensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def _roundtrip(tmp_path, arch, token_dispatcher="allgather", **overrides):
    src = write_hf_model(tmp_path / "src", arch, **overrides)
    imported = import_hf(src, tmp_path / "ckpt", runtime_cfg=CPU, tokenizer_out=tmp_path / "tok",
                         token_dispatcher=token_dispatcher)
    exported = export_checkpoint(tmp_path / "ckpt", tmp_path / "out", runtime_cfg=CPU, tokenizer_dir=tmp_path / "tok",
                                 max_shard_bytes=200_000)
    return src, imported, exported


@pytest.mark.parametrize("arch", ["llama", "mixtral", "qwen2_moe", "qwen3_moe"])
def test_hf_megatron_hf_is_bit_identical(tmp_path, arch):
    src, imported, exported = _roundtrip(tmp_path, arch)
    assert imported.architecture == exported.architecture == arch
    assert imported.max_abs_logit_diff <= 1e-4 and exported.max_abs_logit_diff <= 1e-4
    before, after = _tensors(src), _tensors(tmp_path / "out")
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    assert len(exported.shards) > 1  # 200 kB cap: really sharded, and the index loads
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == [json.loads((src / "config.json").read_text())["architectures"][0]]


def test_alltoall_checkpoint_converts_on_the_cpu(tmp_path):
    """A GPU-trained MoE (alltoall dispatch) is imported and exported by CPU processes unchanged."""
    src, imported, exported = _roundtrip(tmp_path, "mixtral", token_dispatcher="alltoall")
    assert read_info(tmp_path / "ckpt").model.moe.token_dispatcher == "alltoall"
    assert exported.max_abs_logit_diff <= 1e-4
    before, after = _tensors(src), _tensors(tmp_path / "out")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_qwen2_moe_without_topk_renormalization(tmp_path):
    _, imported, exported = _roundtrip(tmp_path, "qwen2_moe", norm_topk_prob=False)
    assert imported.model.moe.router_pre_softmax is True
    assert exported.max_abs_logit_diff <= 1e-4


def test_tied_llama_roundtrip(tmp_path):
    _, imported, exported = _roundtrip(tmp_path, "llama", tie_word_embeddings=True)
    assert imported.model.untie_embeddings_and_output_weights is False
    assert "lm_head.weight" not in _tensors(tmp_path / "out")


@pytest.mark.parametrize("base,arch", [(TINY_DENSE, "llama"), (TINY_MOE, "mixtral")])
def test_megatron_export_loads_and_generates(tmp_path, tokenizer_dir, base, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    save_megatron(tmp_path / "ckpt", base)
    result = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", runtime_cfg=CPU, tokenizer_dir=tokenizer_dir,
                               probe=ProbeConfig(batch=3, length=32))
    assert result.architecture == arch and result.max_abs_logit_diff <= 1e-4
    hf = tmp_path / "hf"
    assert {"config.json", "generation_config.json", "README.md", "tokenizer.json",
            "model.safetensors.index.json"} <= {p.name for p in hf.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    assert model.config.vocab_size == 250 and tok.chat_template
    ids = tok("w1 w2 w3", return_tensors="pt").input_ids
    with torch.no_grad():  # the layer-by-layer verification computes what from_pretrained's model computes
        assert (hf_logits(hf, ids) - model(input_ids=ids).logits).abs().max().item() <= 1e-5
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    assert "Verification" in (hf / "README.md").read_text()


def test_bfloat16_export_is_verified(tmp_path, tokenizer_dir):
    save_megatron(tmp_path / "ckpt", TINY_DENSE)
    result = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", runtime_cfg=CPU, tokenizer_dir=tokenizer_dir,
                               dtype="bfloat16")
    assert result.max_abs_logit_diff <= 1e-4
    assert all(t.dtype == torch.bfloat16 for t in _tensors(tmp_path / "hf").values())
