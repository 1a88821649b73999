"""Export of checkpoints saved by two gloo processes (TP=2 dense, EP=2 MoE) matches their logits."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _save_parallel(mode: str, tmp_path: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tests/slow/convert_worker.py"), mode, str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(tmp_path / "reference.pt")


@pytest.mark.parametrize("mode,arch", [("tp", "llama"), ("ep", "mixtral")])
def test_export_of_parallel_checkpoint_matches_its_logits(tmp_path, mode, arch):
    from factory.convert.export import export_checkpoint
    from factory.convert.verify import hf_logits
    from factory.model.build import parameter_counts
    from factory.runtime.config import RuntimeConfig
    from factory.train.checkpoint import read_info
    from tests.convert.conftest import write_tokenizer

    ref = _save_parallel(mode, tmp_path)
    info = read_info(tmp_path / "ckpt")
    assert info.factory["world_size"] == 2
    assert ref["local_params"] < parameter_counts(info.model).total  # saved sharded
    result = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", runtime=RuntimeConfig(device="cpu"),
                               tokenizer_dir=write_tokenizer(tmp_path / "tok"))
    assert result.architecture == arch and result.max_abs_logit_diff <= 1e-4
    diff = (hf_logits(tmp_path / "hf", ref["tokens"]) - ref["logits"]).abs().max().item()
    assert diff <= 1e-4
