"""Megatron checkpoints read and written one parameter at a time (factory.train.checkpoint_stream)."""

from __future__ import annotations

import pytest
import torch

from factory.errors import CheckpointError
from factory.train.checkpoint_meta import CheckpointMeta
from tests.conftest import TINY_DENSE, TINY_MOE, make_config


def _saved_model(root, base, runtime, **model):
    from factory.model.build import build_gpt_model
    from factory.train import checkpoint as ckpt

    cfg = make_config(base, model=model).model
    net = build_gpt_model(cfg, runtime)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    ckpt.save(root, 3, net, cfg, runtime, meta=CheckpointMeta(stage="pretrain"))
    return cfg, {k: v for k, v in net.state_dict().items() if isinstance(v, torch.Tensor) and "_extra" not in k}


@pytest.mark.parametrize("base", [TINY_DENSE, TINY_MOE])
def test_reader_and_streaming_writer_round_trip_bit_identically(tmp_path, runtime, base):
    from factory.model.build import build_gpt_model
    from factory.train import checkpoint as ckpt
    from factory.train.checkpoint_stream import CheckpointReader, save_streaming

    cfg, weights = _saved_model(tmp_path / "src", base, runtime)
    reader = CheckpointReader(tmp_path / "src", runtime)
    assert set(reader.names) == set(weights)
    assert all(torch.equal(reader.read([name])[name], weights[name]) for name in weights)
    produced = []

    def produce(name):
        produced.append(name)
        return reader.read([name])[name]

    final, written = save_streaming(tmp_path / "out", cfg, runtime, produce, meta=CheckpointMeta(stage="upcycle"))
    assert sorted(produced) == sorted(weights)  # each parameter made exactly once
    assert written == sum(t.numel() * t.element_size() for t in weights.values())
    loaded = build_gpt_model(cfg, runtime)
    info = ckpt.load(tmp_path / "out", loaded, runtime)  # a normal checkpoint, RNG state not expected
    assert info.iteration == 0 and info.meta.stage == "upcycle" and not info.meta.has_optimizer
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in weights.items())


def test_reader_refuses_a_model_config_that_does_not_fit(tmp_path, runtime):
    from factory.train.checkpoint_stream import CheckpointReader

    _saved_model(tmp_path / "src", TINY_DENSE, runtime)
    reader = CheckpointReader(tmp_path / "src", runtime)
    with pytest.raises(CheckpointError, match="no parameter decoder.layers.9"):
        reader.read(["decoder.layers.9.mlp.linear_fc1.weight"])
    name = "decoder.layers.0.mlp.linear_fc2.weight"
    with pytest.raises(CheckpointError, match="cannot read it into"):
        reader.read_into({name: torch.empty(3, 3)})
    wider = make_config(TINY_DENSE, model={"ffn_hidden_size": 256}).model
    reader.layout = type(reader.layout)(wider, runtime)  # as if the config claimed a wider FFN
    with pytest.raises(CheckpointError, match=r"linear_fc2.weight has shape \(2, 64, 128\)"):
        reader.read([name])


def test_streaming_writer_refuses_a_wrong_shape_and_leaves_no_checkpoint(tmp_path, runtime):
    from factory.train.checkpoint_stream import save_streaming

    cfg = make_config(TINY_DENSE).model
    with pytest.raises(CheckpointError, match="produced shape"):
        save_streaming(tmp_path / "out", cfg, runtime, lambda name: torch.zeros(2, 2))
    assert not any((tmp_path / "out").iterdir())


def test_streaming_writer_on_a_full_disk_is_one_line_naming_the_folder(tmp_path, runtime):
    """`ulimit -f` (what a full disk or a quota does to a write): one OutputError, nothing left behind."""
    import resource

    from factory.errors import OutputError
    from factory.train.checkpoint_stream import Layout, save_streaming

    cfg = make_config(TINY_DENSE).model
    shapes = {name: shape for name, (shape, _) in Layout(cfg, runtime).params.items()}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))  # Python ignores SIGXFSZ: the write fails
    try:
        with pytest.raises(OutputError) as raised:
            save_streaming(tmp_path / "out", cfg, runtime, lambda name: torch.zeros(shapes[name]))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    line = str(raised.value)
    partial = tmp_path / "out" / ".iter_0000000.partial"
    assert "\n" not in line and line.startswith(f"checkpoint iteration 0: writing {partial}: File too large"), line
    assert not any((tmp_path / "out").iterdir())
