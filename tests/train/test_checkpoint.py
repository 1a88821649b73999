"""Checkpoint save and load: no helper process, one line for a checkpoint that does not fit, the optimizer format."""

from __future__ import annotations

import psutil
import pytest

from factory.errors import CheckpointError
from factory.runner import run_stage
from factory.registry import STAGES
from factory.runtime.config import ParallelConfig
from factory.train import checkpoint as ckpt
from factory.train import checkpoint_optimizer
from factory.train.checkpoint_meta import CheckpointMeta
from tests.conftest import TINY_DENSE, TINY_MOE, make_config
from tests.train.conftest import train_config


def test_saves_leave_no_child_process(packed_data, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2,
                                                            checkpoint={"save_interval": 1}))
    assert ckpt.latest_iteration(tmp_path / "pretrain" / "checkpoints") == 2
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert started == [], [p.cmdline() for p in started]


def test_keys_missing_from_a_checkpoint_are_one_checkpoint_error(tmp_path, runtime):
    """torch DCP reports a missing key as CheckpointException, a BaseException: it still becomes one line."""
    from factory.model.build import build_gpt_model

    dense = make_config(TINY_DENSE).model
    ckpt.save(tmp_path, 1, build_gpt_model(dense, runtime), dense, runtime)
    with pytest.raises(CheckpointError) as raised:
        ckpt.load(tmp_path, build_gpt_model(make_config(TINY_MOE).model, runtime), runtime)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(f"{tmp_path / 'iter_0000001'}: does not fit this model (KeyError: ")
    assert "decoder.layers.mlp.router.weight" in line


def _info(tmp_path, content_metadata, expert: int) -> ckpt.CheckpointInfo:
    return ckpt.CheckpointInfo(path=tmp_path, iteration=2, model=make_config(TINY_MOE).model,
                               meta=CheckpointMeta(has_optimizer=True), parallel=ParallelConfig(expert=expert),
                               content_metadata=content_metadata)


def test_an_older_moe_checkpoint_is_refused_where_its_optimizer_keys_differ(tmp_path):
    """Before the reshardable format, EP > 1 keyed the optimizer `chained_0.`/`chained_1.`, EP1 did not."""
    older = _info(tmp_path, None, expert=2)
    line = checkpoint_optimizer.layout_refusal(older, ParallelConfig())
    assert "\n" not in line and "saved at TP1/PP1/CP1/EP2/ETP1" in line and "not at TP1/PP1/CP1/EP1/ETP1" in line
    assert line.endswith(f"cpt.init_from={tmp_path} cpt.reset_optimizer=true")
    assert checkpoint_optimizer.layout_refusal(older, ParallelConfig(expert=4)) is None  # chained the same way
    assert checkpoint_optimizer.layout_refusal(_info(tmp_path, checkpoint_optimizer.METADATA, 2),
                                               ParallelConfig()) is None  # the reshardable format loads anywhere


def test_a_background_save_writes_the_tensors_as_they_were_when_it_began(tmp_path, runtime, monkeypatch):
    """The steps that run while a background save writes change the weights in place; the save keeps its own."""
    import threading

    import torch

    from factory.model.build import build_gpt_model
    from factory.train import checkpoint_writer

    dense = make_config(TINY_DENSE).model
    model = build_gpt_model(dense, runtime)
    at_save = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    steps_done, write_all = threading.Event(), checkpoint_writer.write_all
    monkeypatch.setattr(checkpoint_writer, "write_all", lambda *args: (steps_done.wait(), write_all(*args)))
    pending = ckpt.begin_save(tmp_path, 1, model, dense, runtime, background=True)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)  # what an optimizer step does to the training's own tensors
    steps_done.set()
    pending.commit(None, None)
    loaded = build_gpt_model(dense, runtime)
    ckpt.load(tmp_path, loaded, runtime)
    for key, value in loaded.state_dict().items():
        if key in at_save:
            assert torch.equal(value, at_save[key]), key
