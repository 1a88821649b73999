"""The checkpoint's `factory` metadata: one writer, one reader, and checkpoints written before its names."""

import dataclasses

from factory.train.checkpoint_meta import (CheckpointMeta, HfOrigin, LineageStep, UpcycleRecord, VocabExtension,
                                           factory_state)
from tests.conftest import TINY_DENSE, make_config

UPCYCLE = UpcycleRecord(mode="granular", granularity=2, router_init="zero", drop_fraction=0.0, noise_std=0.0,
                        source="/dense/iter_0000007", source_iteration=7)


def test_every_field_round_trips():
    meta = CheckpointMeta(
        stage="cpt", consumed_samples=64, lineage_tokens=12_000, run_tokens=2_000, final_lr=1e-4, peak_lr=3e-4,
        min_lr=3e-5, phase="anneal", data={"seed": 3, "phases": [{"name": "main"}], "batch": "ab12"},
        lineage=(LineageStep("pretrain", "/dense/iter_0000007", 10_000, 7),
                 LineageStep("upcycle", "/moe/iter_0000000", 10_000, 0, UPCYCLE)),
        upcycle=UPCYCLE, imported_from=HfOrigin("/hf/llama", "LlamaForCausalLM"),
        vocab_extension=VocabExtension(120, "/tok"), has_optimizer=True, world_size=2)
    assert {f.name for f in dataclasses.fields(meta)} <= meta.to_dict().keys()  # every field set, every one stored
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    assert meta.tokens_before == 10_000
    assert CheckpointMeta.from_dict(CheckpointMeta().to_dict()) == CheckpointMeta()


def test_the_saved_dict_holds_the_model_and_what_the_save_knows():
    model = make_config(TINY_DENSE).model
    raw = factory_state(CheckpointMeta(stage="pretrain", has_optimizer=False), model, has_optimizer=True,
                        world_size=4)
    assert raw["model"] == model.model_dump(mode="json")
    back = CheckpointMeta.from_dict(raw)
    assert back.has_optimizer and back.world_size == 4 and back.stage == "pretrain"
    assert "world_size" not in factory_state(None, model, has_optimizer=False, world_size=None)


def test_a_checkpoint_written_before_the_two_names_reads_with_lineage_and_run_tokens():
    """The dicts this project wrote before: `tokens_seen` was the lineage's tokens, `tokens_before` the start."""
    cpt = {"stage": "cpt", "consumed_samples": 32, "tokens_seen": 5000 + 4096, "tokens_before": 5000,
           "final_lr": 1e-4, "phase": "main", "data": {"seed": 1}, "peak_lr": 3e-4, "min_lr": 3e-5,
           "lineage": [{"stage": "pretrain", "checkpoint": "/d/iter_0000007", "iteration": 7, "tokens_seen": 5000},
                       {"stage": "upcycle", "checkpoint": "/m/iter_0000000", "tokens_seen": 5000,
                        "upcycle": {"mode": "copy", "granularity": 1, "router_init": "random", "drop_fraction": 0.0,
                                    "noise_std": 0.0, "source": "/d/iter_0000007", "source_iteration": 7}}],
           "model": {"num_layers": 2}, "has_optimizer": True, "world_size": 1}
    meta = CheckpointMeta.from_dict(cpt)
    assert (meta.lineage_tokens, meta.run_tokens, meta.tokens_before) == (9096, 4096, 5000)
    assert meta.lineage[0] == LineageStep("pretrain", "/d/iter_0000007", 5000, 7)
    assert meta.lineage[1].upcycle.source_iteration == 7 and meta.lineage[1].lineage_tokens == 5000
    assert (meta.peak_lr, meta.min_lr, meta.final_lr, meta.has_optimizer) == (3e-4, 3e-5, 1e-4, True)
    # upcycle wrote no tokens_before: its run trained on nothing, its lineage's tokens are its source's
    upcycled = {"stage": "upcycle", "consumed_samples": 0, "tokens_seen": 5000, "final_lr": 1e-4,
                "upcycle": cpt["lineage"][1]["upcycle"], "lineage": cpt["lineage"][:1], "has_optimizer": False}
    meta = CheckpointMeta.from_dict(upcycled)
    assert (meta.lineage_tokens, meta.run_tokens) == (5000, 0) and meta.upcycle.mode == "copy"
    imported = {"source": "hf", "hf_dir": "/hf/qwen", "hf_architecture": "Qwen2ForCausalLM",
                "vocab_extension": {"added": 7, "from": "/tok"}, "model": {}, "has_optimizer": False}
    meta = CheckpointMeta.from_dict(imported)
    assert meta.imported_from == HfOrigin("/hf/qwen", "Qwen2ForCausalLM")
    assert meta.vocab_extension == VocabExtension(7, "/tok") and (meta.lineage_tokens, meta.run_tokens) == (0, 0)
