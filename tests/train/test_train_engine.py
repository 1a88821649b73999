"""pretrain / cpt on megatron.core in one CPU process: loss, checkpoints, exact resume, cpt, errors."""

from __future__ import annotations

import json

import pytest

from factory.errors import CheckpointError, ConfigError
from factory.runner import run_stage
from factory.registry import STAGES
from factory.train import checkpoint as ckpt
from factory.train.checkpoint_meta import LineageStep
from tests.train.conftest import VOCAB, losses, train_config
from tests.upcycle.conftest import upcycle_config


def _run(cfg, stage="pretrain"):
    return run_stage(STAGES[stage], cfg)


def test_pretrain_learns_and_writes_megatron_layout(packed_data, tmp_path):
    cfg = train_config(packed_data, tmp_path, train_iters=8, tensorboard=True, eval_interval=4, eval_iters=1,
                       checkpoint={"save_interval": 2, "keep_last": 2, "keep_every": 4})
    metrics = _run(cfg).to_dict()["metrics"]
    curve = losses(tmp_path)
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.5
    root = tmp_path / "pretrain" / "checkpoints"
    assert (root / ckpt.TRACKER).read_text().strip() == "8"
    # keep_last=2 keeps 6 and 8; keep_every=4 also keeps 4; 2 is pruned.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("iter_")) == \
        ["iter_0000004", "iter_0000006", "iter_0000008"]
    info = ckpt.read_info(root)
    assert info.iteration == 8 and info.meta.consumed_samples == 32 and info.meta.has_optimizer
    assert info.meta.run_tokens == info.meta.lineage_tokens == metrics["run_tokens"] == metrics["lineage_tokens"] \
        == 8 * 4 * 32
    assert metrics["final_loss"] == curve[-1] and metrics["final_valid_loss"] > 0
    assert list((tmp_path / "pretrain" / "tensorboard").iterdir())


def test_resume_reproduces_the_uninterrupted_loss_curve_exactly(packed_data, tmp_path):
    _run(train_config(packed_data, tmp_path / "straight", train_iters=6))
    _run(train_config(packed_data, tmp_path / "split", train_iters=3,
                      schedule={"decay_iters": 6}, checkpoint={"save_interval": 3}))
    _run(train_config(packed_data, tmp_path / "split", train_iters=6))  # resumes at 3
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def test_cpt_inherits_lr_and_lineage_and_can_keep_optimizer(packed_data, tmp_path):
    _run(train_config(packed_data, tmp_path, train_iters=4))
    source = ckpt.read_info(tmp_path / "pretrain" / "checkpoints")
    cfg = train_config(packed_data, tmp_path, stage="cpt", train_iters=2, optimizer={"lr": None},
                       schedule={"style": "constant", "warmup_iters": 0}, reset_optimizer=False)
    metrics = _run(cfg, "cpt").to_dict()["metrics"]
    assert metrics["final_lr"] == pytest.approx(source.meta.final_lr)
    info = ckpt.read_info(tmp_path / "cpt" / "checkpoints")
    assert info.meta.lineage[-1] == LineageStep("pretrain", str(source.path), source.meta.lineage_tokens, 4)
    assert metrics["lineage_tokens"] == info.meta.lineage_tokens == source.meta.lineage_tokens + 2 * 4 * 32
    assert metrics["run_tokens"] == info.meta.run_tokens == 2 * 4 * 32


def test_cpt_from_an_upcycled_checkpoint_counts_the_dense_tokens_in_its_lineage_not_in_its_run(packed_data, tmp_path):
    _run(train_config(packed_data, tmp_path, train_iters=4, checkpoint={"save_interval": 4}))
    dense = ckpt.read_info(tmp_path / "pretrain" / "checkpoints")
    run_stage(STAGES["upcycle"], upcycle_config(tmp_path, dense.path, model={"vocab_size": VOCAB}))
    upcycled = ckpt.read_info(tmp_path / "upcycle" / "checkpoints")
    assert (upcycled.meta.lineage_tokens, upcycled.meta.run_tokens) == (4 * 4 * 32, 0)
    cfg = train_config(packed_data, tmp_path, stage="cpt", train_iters=2, optimizer={"lr": None},
                       init_from=str(upcycled.path))
    metrics = _run(cfg, "cpt").to_dict()["metrics"]
    info = ckpt.read_info(tmp_path / "cpt" / "checkpoints")
    assert info.model.moe is not None and info.meta.stage == "cpt"
    assert metrics["lineage_tokens"] == info.meta.lineage_tokens == (4 + 2) * 4 * 32
    assert metrics["run_tokens"] == info.meta.run_tokens == 2 * 4 * 32
    assert [(s.stage, s.checkpoint, s.iteration, s.lineage_tokens) for s in info.meta.lineage] == [
        ("pretrain", str(dense.path), 4, 4 * 4 * 32), ("upcycle", str(upcycled.path), 0, 4 * 4 * 32)]
    assert info.meta.lineage[-1].upcycle == upcycled.meta.upcycle and upcycled.meta.upcycle.source_iteration == 4


def test_z_loss_path_matches_megatron_loss_and_logs_z(packed_data, tmp_path):
    _run(train_config(packed_data, tmp_path / "plain", train_iters=1, schedule={"warmup_iters": 0}))
    _run(train_config(packed_data, tmp_path / "z", train_iters=1, schedule={"warmup_iters": 0},
                      z_loss_coeff=1e-4))
    plain = json.loads((tmp_path / "plain/pretrain/metrics.jsonl").read_text())
    z = json.loads((tmp_path / "z/pretrain/metrics.jsonl").read_text())
    assert z["loss"] == pytest.approx(plain["loss"], abs=1e-6)  # same weights, same LM loss
    assert z["z_loss"] > 0 and "z_loss" not in plain


def test_moe_logs_per_layer_expert_load(packed_data, tmp_path):
    metrics = _run(train_config(packed_data, tmp_path, moe=True, train_iters=3)).to_dict()["metrics"]
    record = json.loads((tmp_path / "pretrain/metrics.jsonl").read_text().splitlines()[-1])
    load = record["moe_tokens_per_expert"]
    assert sorted(load) == ["layer0", "layer1"] and len(load["layer0"]) == 8
    # every token goes to top-2 experts: 4 sequences x 32 tokens x 2 per layer and iteration
    assert sum(load["layer0"]) == 4 * 32 * 2
    assert metrics["moe_imbalance"]["layer0"] >= 1.0


def test_lr_schedules(packed_data, tmp_path):
    from factory.train.setup import build_scheduler

    class Opt:
        param_groups = [{"lr": 0.0, "weight_decay": 0.0}]

    def lrs(**schedule):
        tc = train_config(packed_data, tmp_path, train_iters=10, schedule=schedule).pretrain
        sched = build_scheduler(Opt(), tc, lr=1.0, min_lr=0.1)
        out = []
        for _ in range(10):
            sched.step(1)
            out.append(Opt.param_groups[0]["lr"])
        return out

    cosine = lrs(style="cosine", warmup_iters=2)
    assert cosine[0] == pytest.approx(0.5) and cosine[1] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.1)
    wsd = lrs(style="wsd", warmup_iters=2, wsd_decay_iters=4)
    assert wsd[1:6] == pytest.approx([1.0] * 5) and wsd[-1] == pytest.approx(0.1)
    assert lrs(style="constant", warmup_iters=0) == pytest.approx([1.0] * 10)


def test_errors_are_one_clear_line(packed_data, tmp_path):
    with pytest.raises(ConfigError, match="global_batch_size=6: must be divisible by micro_batch_size"):
        train_config(packed_data, tmp_path, global_batch_size=6, micro_batch_size=4)
    with pytest.raises(ConfigError, match="blend file not found"):
        _run(train_config(packed_data, tmp_path, blend_file=str(tmp_path / "missing.json")))
    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        _run(train_config(packed_data, tmp_path, model={"vocab_size": 100}))
    with pytest.raises(ConfigError, match="pretrain.optimizer.lr"):
        train_config(packed_data, tmp_path, optimizer={"lr": None})
    _run(train_config(packed_data, tmp_path, train_iters=2))
    with pytest.raises(CheckpointError, match="model.hidden_size: config 128 vs checkpoint 64"):
        _run(train_config(packed_data, tmp_path, train_iters=4, model={"hidden_size": 128}))


def test_flops_per_token_counts_the_real_model_matmul_weights(runtime):
    from factory.model.build import build_gpt_model
    from factory.train.flops import flops_per_token
    from tests.conftest import TINY_DENSE, make_config

    model_cfg = make_config(TINY_DENSE).model
    model = build_gpt_model(model_cfg, runtime)
    matmul = sum(p.numel() for name, p in model.named_parameters()
                 if p.dim() == 2 and "word_embeddings" not in name)  # norms are 1-D
    attention = 12 * model_cfg.num_layers * model_cfg.seq_length * model_cfg.hidden_size
    assert flops_per_token(model_cfg) == 6 * matmul + attention


def test_tanuki_presets_dry_run_layout_and_sizes(capsys):
    from factory.stage import main

    assert main(["pretrain", "--config", "configs/tanuki-8b.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "TP1/PP4/CP1/EP1/ETP1" in out and "# parameters: 7,512.26M total" in out
    assert "tokens: 1,299,185,664,000" in out
    assert main(["cpt", "--config", "configs/tanuki-8x8b.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "EP8" in out and "46,973.33M total, 13,150.46M active" in out
    assert "starts from runs/tanuki-8x8b/upcycle/checkpoints" in out
