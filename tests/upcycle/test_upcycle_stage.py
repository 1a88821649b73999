"""The upcycle stage end to end on a tiny dense checkpoint: exact modes, reported modes, lineage."""

from dataclasses import replace

import pytest

from factory.identity import identity
from factory.train.checkpoint import read_info
from factory.train.checkpoint_meta import LineageStep
from factory.errors import ConfigError
from tests.upcycle.conftest import DENSE_META, run_upcycle, save_dense, upcycle_config

EXACT = {
    "copy-random": dict(mode="copy"),
    "copy-zero": dict(mode="copy", router_init="zero"),
    "granular-g2": dict(mode="granular", granularity=2),
    "granular-g4": dict(mode="granular", granularity=4, moe={"num_experts": 8, "router_topk": 4}),
    "shared": dict(mode="shared", moe={"shared_expert_ffn_hidden_size": 32}),
    "shared-gate-g2": dict(mode="shared", granularity=2,
                           moe={"shared_expert_ffn_hidden_size": 32, "shared_expert_gate": True}),
    "pre-softmax-zero": dict(mode="copy", router_init="zero", moe={"router_pre_softmax": True}),
    "sigmoid": dict(mode="copy", moe={"router_score_function": "sigmoid"}),
    "sigmoid-top1-zero": dict(mode="copy", router_init="zero",
                              moe={"router_score_function": "sigmoid", "router_topk": 1}),
}


@pytest.mark.parametrize("section", EXACT.values(), ids=EXACT.keys())
def test_exact_modes_equal_the_dense_model(tmp_path, dense_ckpt, section):
    manifest = run_upcycle(tmp_path, dense_ckpt, **section)
    assert manifest["metrics"]["max_abs_logit_diff"] <= 1e-5
    info = read_info(tmp_path / "upcycle" / "checkpoints")
    assert info.iteration == 0 and info.model.moe.num_experts == section.get("moe", {}).get("num_experts", 4)
    expected_ffn = (128 - (info.model.moe.shared_expert_ffn_hidden_size or 0)) // section.get("granularity", 1)
    assert info.model.moe.ffn_hidden_size == expected_ffn


def test_gpu_only_moe_settings_are_written_and_verified_on_the_cpu(tmp_path, dense_ckpt):
    """alltoall dispatch and grouped GEMM need CUDA to train, not to write or probe the checkpoint."""
    moe = {"token_dispatcher": "alltoall", "grouped_gemm": True}
    manifest = run_upcycle(tmp_path, dense_ckpt, mode="copy", moe=moe)
    assert manifest["metrics"]["max_abs_logit_diff"] <= 1e-5
    written = read_info(tmp_path / "upcycle" / "checkpoints").model.moe
    assert (written.token_dispatcher, written.grouped_gemm) == ("alltoall", True)


def test_checkpoint_carries_lineage_for_cpt(tmp_path, dense_ckpt):
    run_upcycle(tmp_path, dense_ckpt, mode="copy")
    meta = read_info(tmp_path / "upcycle" / "checkpoints").meta
    assert meta.final_lr == DENSE_META.final_lr and meta.stage == "upcycle"
    assert (meta.lineage_tokens, meta.run_tokens) == (DENSE_META.lineage_tokens, 0)  # a run of no tokens
    assert meta.upcycle.mode == "copy" and meta.upcycle.source_iteration == 7
    assert meta.upcycle.source == str(dense_ckpt / "iter_0000007")
    assert meta.lineage == (LineageStep("pretrain", str(dense_ckpt / "iter_0000007"), DENSE_META.lineage_tokens, 7),)
    assert not meta.has_optimizer and meta.consumed_samples == 0


@pytest.mark.parametrize("key, small, large", [("drop_fraction", 0.1, 0.6), ("noise_std", 1e-3, 3e-2)])
def test_drop_and_noise_report_a_divergence_that_grows(tmp_path, dense_ckpt, key, small, large):
    mode = "drop" if key == "drop_fraction" else "copy"
    diffs = [run_upcycle(tmp_path / str(v), dense_ckpt, mode=mode, **{key: v})["metrics"]["max_abs_logit_diff"]
             for v in (small, large)]
    assert 1e-4 < diffs[0] < diffs[1]
    assert (tmp_path / str(large) / "upcycle" / "checkpoints" / "iter_0000000").is_dir()


def test_rerun_replaces_the_previous_output(tmp_path, dense_ckpt):
    run_upcycle(tmp_path, dense_ckpt, mode="copy")
    run_upcycle(tmp_path, dense_ckpt, mode="granular", granularity=2)
    assert read_info(tmp_path / "upcycle" / "checkpoints").meta.upcycle.mode == "granular"


def test_a_mid_training_iteration_is_chosen_by_iteration_or_by_tokens(tmp_path):
    """Tanuki upcycled the dense run at 1,080B tokens, not at its end: name the iteration or the tokens."""
    from factory.upcycle.upcycle_stage import plan

    root = tmp_path / "dense"
    for iteration, tokens in ((7, 4096), (9, 8192), (11, 12288)):
        save_dense(root, iteration=iteration, meta=replace(DENSE_META, lineage_tokens=tokens, run_tokens=tokens))
    by_tokens = plan(upcycle_config(tmp_path / "run", root, source_tokens=10_000))
    assert by_tokens.reads == [root / "iter_0000009"] and "iteration 9 (8,192 tokens seen)" in by_tokens.notes[0]
    assert plan(upcycle_config(tmp_path / "run", root, source_iteration=7)).reads == [root / "iter_0000007"]
    assert plan(upcycle_config(tmp_path / "run", root)).reads == [root / "iter_0000011"]
    with pytest.raises(ConfigError, match=r"upcycle.source_iteration=8: not saved in .*latest saved: 7, 9, 11"):
        plan(upcycle_config(tmp_path / "run", root, source_iteration=8))
    with pytest.raises(ConfigError, match="source_tokens=1000: no checkpoint .* iteration 7, has seen 4,096"):
        plan(upcycle_config(tmp_path / "run", root, source_tokens=1000))
    with pytest.raises(ConfigError, match="name one of source_iteration"):
        upcycle_config(tmp_path / "run", root, source_iteration=7, source_tokens=10_000)
    manifest = run_upcycle(tmp_path / "run", root, source_tokens=10_000)
    assert read_info(tmp_path / "run" / "upcycle" / "checkpoints").meta.upcycle.source_iteration == 9
    assert manifest["metrics"]["max_abs_logit_diff"] <= 1e-5


def test_upcycling_the_same_checkpoint_again_keeps_its_identity_so_cpt_is_not_invalidated(tmp_path, dense_ckpt):
    root = tmp_path / "upcycle" / "checkpoints"
    run_upcycle(tmp_path, dense_ckpt, mode="copy")
    before = identity(root)
    run_upcycle(tmp_path, dense_ckpt, mode="copy")  # a new manifest and torch DCP plan, the same tensors
    assert identity(root) == before  # what cpt recorded as its input still matches: no "input changed"
    run_upcycle(tmp_path, dense_ckpt, mode="granular", granularity=2)
    assert identity(root) != before  # other weights: another identity
