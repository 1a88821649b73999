"""Layer-by-layer HF forward equals the full model's; the streaming shard writer writes loadable safetensors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from factory.convert.hf_io import INDEX, LazyReader, StreamingShardWriter
from factory.convert.hf_stream import HfLayerStream
from factory.errors import CheckpointError
from tests.convert.conftest import write_hf_model


def _streamed_logits(folder, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoConfig

    stream = HfLayerStream(AutoConfig.from_pretrained(folder, local_files_only=True))
    reader = LazyReader(folder)
    hidden = stream.embed(tokens, {k: reader.get(k) for k in stream.embed_names()})
    for i in range(stream.num_layers):
        hidden = stream.layer(hidden, i, {k: reader.get(k) for k in stream.layer_names(i)})
    return stream.logits(hidden, {k: reader.get(k) for k in stream.head_names()})


@pytest.mark.parametrize("arch,overrides", [("llama", {}), ("llama", {"tie_word_embeddings": True}),
                                            ("mixtral", {}), ("qwen3_moe", {}), ("qwen2_moe", {})])
def test_streamed_logits_equal_full_model(tmp_path, arch, overrides):
    from transformers import AutoModelForCausalLM

    folder = write_hf_model(tmp_path / arch, arch, _sharded=True, **overrides)
    tokens = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    full = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True,
                                                attn_implementation="sdpa")
    with torch.no_grad():
        expected = full.eval()(input_ids=tokens).logits
    streamed = _streamed_logits(folder, tokens)
    assert streamed.shape == (2, 24, 250)
    assert (streamed - expected).abs().max().item() <= 1e-6


def test_layer_weights_are_checked(tmp_path):
    from transformers import AutoConfig

    folder = write_hf_model(tmp_path / "m", "mixtral")
    stream = HfLayerStream(AutoConfig.from_pretrained(folder, local_files_only=True))
    reader = LazyReader(folder)
    names = stream.layer_names(1)
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in names
    weights = {k: reader.get(k) for k in names}
    hidden = torch.zeros(1, 4, 64)
    with pytest.raises(CheckpointError, match="missing model.layers.1.block_sparse_moe.gate.weight"):
        stream.layer(hidden, 1, {k: v for k, v in weights.items() if not k.endswith("block_sparse_moe.gate.weight")})
    with pytest.raises(CheckpointError, match="unexpected model.layers.0.input_layernorm.weight"):
        stream.layer(hidden, 1, {**weights, "model.layers.0.input_layernorm.weight": torch.ones(64)})
    bad = {**weights, "model.layers.1.self_attn.o_proj.weight": torch.zeros(64, 32)}
    with pytest.raises(CheckpointError, match=r"o_proj.weight has shape \[64, 32\]"):
        stream.layer(hidden, 1, bad)


def _plan_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(10, 8, generator=gen),  # 320 bytes
            "b.weight": torch.randn(40, generator=gen).to(torch.bfloat16),  # 80
            "c.big": torch.randn(30, 10, generator=gen),  # 1200: alone over the cap
            "d.bias": torch.randn(3, 5, generator=gen).to(torch.bfloat16).t(),  # non-contiguous
            "e.scalar": torch.tensor(1.5)}


def _writer(folder, tensors) -> StreamingShardWriter:
    plan = [(k, tuple(t.shape), t.dtype) for k, t in tensors.items()]
    return StreamingShardWriter(folder, plan, max_bytes=500)


def test_streaming_writer_shards_load_bit_identically(tmp_path):
    tensors = _plan_tensors()
    writer = _writer(tmp_path, tensors)
    for name, t in tensors.items():
        writer.add(name, t)
    shards = writer.finish()
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / INDEX).read_text())
    assert index["metadata"]["total_size"] == writer.total_bytes == 320 + 80 + 1200 + 30 + 4
    assert list(index["weight_map"]) == sorted(tensors)
    assert index["weight_map"]["c.big"] == shards[1] and index["weight_map"]["e.scalar"] == shards[2]
    assert all(int.from_bytes((tmp_path / s).read_bytes()[:8], "little") % 8 == 0 for s in shards)
    loaded = {k: v for s in shards for k, v in load_file(tmp_path / s).items()}
    reader = LazyReader(tmp_path)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t)
        assert torch.equal(reader.get(name), t)


def test_streaming_writer_refuses_out_of_order_and_early_finish(tmp_path):
    tensors = _plan_tensors()
    writer = _writer(tmp_path, tensors)
    with pytest.raises(CheckpointError, match="expected tensor a.weight .* got b.weight"):
        writer.add("b.weight", tensors["b.weight"])
    with pytest.raises(CheckpointError, match="expected tensor a.weight .* got a.weight \\[10, 8\\] torch.bfloat16"):
        writer.add("a.weight", tensors["a.weight"].to(torch.bfloat16))
    writer.add("a.weight", tensors["a.weight"])
    with pytest.raises(CheckpointError, match="tensor b.weight was never written"):
        writer.finish()
