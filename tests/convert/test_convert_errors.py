"""Clear refusals: unsupported architectures, missing or damaged shards, vocab smaller than the tokenizer,
shape mismatch."""

from __future__ import annotations

import json

import pytest

from factory.convert.export import export_checkpoint
from factory.convert.hf_config import choose_architecture
from factory.convert.hf_import import import_hf
from factory.errors import CheckpointError, ConfigError
from factory.model.config import ModelConfig
from factory.runtime.config import RuntimeConfig
from tests.conftest import TINY_DENSE, TINY_MOE
from tests.convert.conftest import save_megatron, write_hf_model, write_tokenizer

CPU = RuntimeConfig(device="cpu", precision="fp32")


def _moe(**moe) -> ModelConfig:
    raw = {**TINY_MOE["model"], "moe": {**TINY_MOE["model"]["moe"], **moe}}
    return ModelConfig.model_validate(raw)


def _import(src, tmp_path):
    return import_hf(src, tmp_path / "ckpt", runtime_cfg=CPU, tokenizer_out=tmp_path / "tok")


@pytest.mark.parametrize("moe,arch", [
    ({}, "mixtral"),
    ({"shared_expert_ffn_hidden_size": 64, "shared_expert_gate": True}, "qwen2_moe"),
    ({"shared_expert_ffn_hidden_size": 64, "shared_expert_gate": True, "router_pre_softmax": True}, "qwen2_moe"),
])
def test_auto_picks_the_architecture_computing_the_same_function(moe, arch):
    assert choose_architecture(_moe(**moe)) == arch
    assert choose_architecture(ModelConfig.model_validate(TINY_DENSE["model"])) == "llama"


@pytest.mark.parametrize("moe,setting", [
    ({"router_score_function": "sigmoid"}, "model.moe.router_score_function=sigmoid"),
    ({"router_pre_softmax": True}, "model.moe.router_pre_softmax=true"),
    ({"router_topk_scaling_factor": 2.0}, "model.moe.router_topk_scaling_factor=2.0"),
    ({"shared_expert_ffn_hidden_size": 64}, "model.moe.shared_expert_gate=false"),
])
def test_no_matching_architecture_names_the_setting(moe, setting):
    with pytest.raises(ConfigError) as err:
        choose_architecture(_moe(**moe))
    assert setting in str(err.value)


def test_requested_architecture_that_differs_is_refused():
    with pytest.raises(ConfigError, match="export.architecture=mixtral: model.moe is not set"):
        choose_architecture(ModelConfig.model_validate(TINY_DENSE["model"]), "mixtral")
    with pytest.raises(ConfigError, match="Qwen3-MoE always applies per-head q/k RMSNorm"):
        choose_architecture(_moe(), "qwen3_moe")


def test_unsupported_hf_architecture(tmp_path):
    src = write_hf_model(tmp_path / "src", "llama")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="model_type='gpt2' is not supported .supported: llama, mixtral"):
        _import(src, tmp_path)


def test_hf_biases_are_refused(tmp_path):
    src = write_hf_model(tmp_path / "src", "llama", attention_bias=True)
    with pytest.raises(ConfigError, match="attention_bias=True"):
        _import(src, tmp_path)
    assert not (tmp_path / "ckpt").exists()


def test_missing_shard(tmp_path):
    src = write_hf_model(tmp_path / "src", "llama", _sharded=True)
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    with pytest.raises(CheckpointError, match=f"missing shard.*{shards[1].name}"):
        _import(src, tmp_path)


@pytest.mark.parametrize("damage, words", [
    (lambda b: b"\xff" * 64, "not a safetensors file"),
    (lambda b: b[: len(b) // 2], "truncated at tensor"),
])
def test_damaged_shard_is_named(tmp_path, damage, words):
    src = write_hf_model(tmp_path / "src", "llama", _sharded=True)
    shard = sorted(src.glob("model-*.safetensors"))[-1]
    shard.write_bytes(damage(shard.read_bytes()))
    with pytest.raises(CheckpointError, match=f"{shard.name}: .*{words}"):
        _import(src, tmp_path)
    assert not (tmp_path / "ckpt").exists()


def test_hf_vocab_smaller_than_tokenizer(tmp_path):
    src = write_hf_model(tmp_path / "src", "llama", tokenizer_size=300)
    with pytest.raises(CheckpointError, match="vocab_size 250 is smaller than the tokenizer .300 ids"):
        _import(src, tmp_path)


def test_export_vocab_smaller_than_tokenizer(tmp_path):
    save_megatron(tmp_path / "ckpt", TINY_DENSE)
    tok = write_tokenizer(tmp_path / "tok", size=300)
    with pytest.raises(CheckpointError, match="vocab_size 250 is smaller than the tokenizer"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", runtime_cfg=CPU, tokenizer_dir=tok)
    assert not (tmp_path / "hf").exists()


def test_config_weights_shape_mismatch(tmp_path):
    src = write_hf_model(tmp_path / "src", "llama")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(CheckpointError, match=r"gate_proj.weight, .*up_proj.weight give shape \(256, 64\) "
                                              r"but config.json implies \(192, 64\)"):
        _import(src, tmp_path)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(("arch", "change", "words"), [
    ("llama", {"max_position_embeddings": None}, "required key 'max_position_embeddings' is missing"),
    ("llama", {"hidden_size": "64"}, "hidden_size='64': expected a positive integer"),
    ("llama", {"num_key_value_heads": 0}, "num_key_value_heads=0: expected a positive integer"),
    ("llama", {"rms_norm_eps": None}, "required key 'rms_norm_eps' is missing"),
    ("llama", {"rope_parameters": "default"}, "rope_parameters='default': expected an object"),
    ("mixtral", {"num_experts_per_tok": None}, "required key 'num_experts_per_tok' is missing"),
    ("qwen2_moe", {"shared_expert_intermediate_size": None}, "required key 'shared_expert_intermediate_size'"),
    ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": "fast"}}, "model.rotary_base='fast'"),
], ids=["no-positions", "text-size", "zero-groups", "no-eps", "rope-string", "no-topk", "no-shared-size",
        "text-theta"])
def test_a_missing_or_ill_typed_config_key_is_one_line_naming_the_file(tmp_path, arch, change, words):
    src = write_hf_model(tmp_path / "src", arch)
    config = json.loads((src / "config.json").read_text())
    edited = {k: v for k, v in {**config, **change}.items() if v is not None}
    (src / "config.json").write_text(json.dumps(edited))
    with pytest.raises(CheckpointError) as info:
        _import(src, tmp_path)
    assert str(info.value).startswith(f"{src}/config.json: ") and words in str(info.value), str(info.value)
    assert len(info.value.lines()) == 1 and not (tmp_path / "ckpt").exists()


def _retype(shard, tensor: str, dtype: str) -> None:
    """Rewrite one tensor's dtype in a safetensors header, as a quantizing tool would."""
    import struct

    data = shard.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header[tensor]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    shard.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size:])


def test_an_unsupported_dtype_names_the_tensor_its_dtype_and_the_supported_ones(tmp_path):
    src = write_hf_model(tmp_path / "src", "llama")
    name = "model.layers.0.mlp.down_proj.weight"
    _retype(src / "model.safetensors", name, "I8")
    with pytest.raises(CheckpointError) as info:
        _import(src, tmp_path)
    assert str(info.value).startswith(f"{src / 'model.safetensors'}: tensor {name} has dtype I8, which cannot be "
                                      "read (supported: F32, BF16, F16, F64, I64, I32, U8, BOOL;")
    assert not (tmp_path / "ckpt").exists()


def test_a_header_whose_byte_range_does_not_fit_the_shape_is_named(tmp_path):
    from factory.convert.hf_io import LazyReader

    src = write_hf_model(tmp_path / "src", "llama")
    name = "model.norm.weight"
    _retype(src / "model.safetensors", name, "F16")  # the bytes are F32: twice what F16 needs
    with pytest.raises(CheckpointError, match=rf"model.safetensors: tensor {name}: 256 bytes for shape \[64\] F16 "
                                              r"\(128 expected\)"):
        LazyReader(src).get(name)
