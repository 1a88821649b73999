"""Refusals: routings that cannot be exact, MoE configs that do not fit the dense checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from factory.errors import CheckpointError, ConfigError, VerificationError
from tests.upcycle.conftest import run_upcycle, upcycle_config

ROOT = Path(__file__).resolve().parents[2]
_RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("section, key", [
    (dict(mode="granular", granularity=2, router_init="zero"), "upcycle.mode"),
    (dict(mode="copy", moe={"router_pre_softmax": True}), "upcycle.mode"),
    (dict(mode="copy", moe={"router_score_function": "sigmoid", "router_topk": 1}), "upcycle.mode"),
    (dict(mode="copy", moe={"router_topk": 1}), "upcycle.moe.router_pre_softmax"),
    (dict(mode="granular", granularity=2, moe={"num_experts": 6, "router_topk": 3}), "upcycle.moe.router_topk"),
    (dict(mode="granular", granularity=4, moe={"num_experts": 6, "router_topk": 4}), "upcycle.moe.num_experts"),
    (dict(mode="copy", granularity=2), "upcycle.granularity"),
    (dict(mode="granular"), "upcycle.granularity"),
    (dict(mode="shared"), "upcycle.moe.shared_expert_ffn_hidden_size"),
    (dict(mode="copy", moe={"shared_expert_ffn_hidden_size": 32}), "upcycle.moe.shared_expert_ffn_hidden_size"),
])
def test_config_rules_name_the_key(tmp_path, section, key):
    with pytest.raises(ConfigError) as e:
        upcycle_config(tmp_path, tmp_path / "none", **section)
    assert any(p.startswith(f"<config>: {key}=") for p in e.value.problems), e.value.problems


def test_drop_mode_is_not_refused_for_an_inexact_routing(tmp_path):
    cfg = upcycle_config(tmp_path, tmp_path / "none", mode="drop", moe={"router_pre_softmax": True})
    assert not cfg.upcycle.exact


@pytest.mark.parametrize("section, words", [
    (dict(mode="granular", granularity=3, moe={"num_experts": 6, "router_topk": 3}),
     "upcycle.granularity=3: does not divide the routed FFN"),
    (dict(mode="copy", moe={"ffn_hidden_size": 64}), "upcycle.moe.ffn_hidden_size=64: must be 128"),
    (dict(mode="shared", moe={"shared_expert_ffn_hidden_size": 128}),
     "upcycle.moe.shared_expert_ffn_hidden_size=128: must be smaller"),
])
def test_moe_that_does_not_fit_is_a_config_error(tmp_path, dense_ckpt, section, words):
    with pytest.raises(ConfigError, match=words):
        run_upcycle(tmp_path, dense_ckpt, **section)
    assert not (tmp_path / "upcycle").exists()


@pytest.mark.parametrize("model, words", [({"hidden_size": 128}, "model.hidden_size=128"),
                                          ({"num_layers": 3}, "model.num_layers=3")])
def test_model_section_that_differs_from_the_checkpoint(tmp_path, dense_ckpt, model, words):
    with pytest.raises(CheckpointError, match=words):
        run_upcycle(tmp_path, dense_ckpt, model=model, mode="copy")


def test_moe_source_is_refused(tmp_path, dense_ckpt):
    run_upcycle(tmp_path, dense_ckpt, mode="copy")
    with pytest.raises(CheckpointError, match="already a MoE model"):
        run_upcycle(tmp_path / "again", tmp_path / "upcycle" / "checkpoints", mode="copy")


def test_verification_failure_writes_nothing(tmp_path, dense_ckpt):
    with pytest.raises(VerificationError, match="exceeds upcycle.tolerance"):
        run_upcycle(tmp_path, dense_ckpt, mode="copy", tolerance=1e-12)
    assert not (tmp_path / "upcycle").exists()


def test_cli_writes_checkpoint_and_manifest(tmp_path, dense_ckpt):
    from tests.conftest import TINY_DENSE

    raw = {**TINY_DENSE, "run": {"name": "cli", "dir": str(tmp_path)},
           "upcycle": {"source": str(dense_ckpt), "mode": "granular", "granularity": 2,
                       "moe": {"num_experts": 4, "router_topk": 2, "token_dispatcher": "allgather"}}}
    (tmp_path / "up.yaml").write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "factory.stage", "upcycle", "--config", str(tmp_path / "up.yaml")]
    # A fresh process: not the rendezvous variables this process's earlier runtimes left behind.
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = yaml.safe_load((tmp_path / "upcycle" / "checkpoints" / "manifest.json").read_text())
    assert manifest["metrics"]["max_abs_logit_diff"] <= 1e-5
    bad = subprocess.run(cmd + ["upcycle.router_init=zero"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "upcycle.mode=granular: cannot be exact" in bad.stderr
