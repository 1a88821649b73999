"""Checkpoints saved by two gloo processes: export (TP=2 dense, EP=2 MoE) matches their logits, and the
streaming reader returns exactly the saved tensors (TP=2, PP=2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """<folder>/{tp,ep,pp}: the checkpoints and references of tests/slow/convert_worker.py, saved by one torchrun
    for the tests of this module (they only read them)."""
    out = tmp_path_factory.mktemp("parallel-saves")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/convert_worker.py"), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("mode,arch", [("tp", "llama"), ("ep", "mixtral")])
def test_export_of_parallel_checkpoint_matches_its_logits(saved, tmp_path, mode, arch):
    from factory.convert.export import export_checkpoint
    from factory.convert.verify import hf_logits
    from factory.model.build import parameter_counts
    from factory.runtime.config import RuntimeConfig
    from factory.train.checkpoint import read_info
    from tests.convert.conftest import write_tokenizer

    ref = torch.load(saved / mode / "reference.pt")
    info = read_info(saved / mode / "ckpt")
    assert info.meta.world_size == 2
    assert ref["local_params"] < parameter_counts(info.model).total  # saved sharded
    result = export_checkpoint(saved / mode / "ckpt", tmp_path / "hf", runtime_cfg=RuntimeConfig(device="cpu"),
                               tokenizer_dir=write_tokenizer(tmp_path / "tok"))
    assert result.architecture == arch and result.max_abs_logit_diff <= 1e-4
    diff = (hf_logits(tmp_path / "hf", ref["tokens"]) - ref["logits"]).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("mode", ["tp", "pp"])
def test_streaming_reader_returns_the_saved_tensors(saved, mode):
    from factory.runtime.runtime import runtime_session
    from factory.train.checkpoint_stream import CheckpointReader
    from tests.conftest import TINY_DENSE, make_config

    folder = saved / mode
    cfg = make_config(TINY_DENSE)
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        reader = CheckpointReader(folder / "ckpt", rt)
        tensors = reader.read(reader.names)
    if mode == "pp":  # each stage saved its own layers; together they are the model
        stages = {**torch.load(folder / "stage0.pt"), **torch.load(folder / "stage1.pt")}
        assert set(stages) == set(tensors)
        assert all(torch.equal(tensors[k], v) for k, v in stages.items())
    else:  # TP=2: fused QKV and SwiGLU fc1 are split per rank; the reader reassembles the TP=1 tensors
        from factory.model.build import build_gpt_model
        from factory.train import checkpoint as ckpt

        with runtime_session(cfg.runtime, cfg.parallel) as rt:
            whole = build_gpt_model(reader.info.model, rt)
            ckpt.load(folder / "ckpt", whole, rt, restore_rng=False)
            expected = {k: v for k, v in whole.state_dict().items() if k in tensors}
        assert set(expected) == set(tensors)
        assert all(torch.equal(tensors[k], v) for k, v in expected.items())
