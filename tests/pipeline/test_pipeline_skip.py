"""Skip logic: what runs again after a config change, a deleted output, a changed input or a failure."""

import json

import pytest

from factory.errors import DataError
from factory.pipeline import decide, run_pipeline
from factory.registry import CHAIN, STAGES, chain_problems
from factory.run_state import STATE_NAME, load_state

ALL = ["tokenizer", "data", "pack", "pretrain", "upcycle", "cpt", "export", "sft", "dpo", "eval"]


def actions(cfg) -> dict[str, str]:
    return {d.stage: d.action for d in decide(cfg, load_state(cfg.run.dir))}


def test_every_verb_has_a_pipeline_step_after_its_upstream_stages():
    assert set(s.name for s in CHAIN) == set(STAGES)
    order = [s.name for s in CHAIN]
    for name, step in STAGES.items():
        assert all(order.index(dep) < order.index(name) for dep in step.after), name
    assert chain_problems(CHAIN) == []


def test_first_run_runs_all_in_order_then_a_rerun_skips_all(fakes, demo_config):
    cfg = demo_config()
    run_pipeline(cfg)
    assert fakes.calls == ALL
    state = json.loads((cfg.run.dir / STATE_NAME).read_text())
    assert all(state["stages"][s]["status"] == "done" for s in ALL)
    fakes.calls.clear()
    decisions = run_pipeline(demo_config())
    assert fakes.calls == []
    assert {d.action for d in decisions} == {"skip"}


@pytest.mark.parametrize("override, expected", [
    ("sft.max_steps=9", ["sft", "dpo", "eval"]),
    ("pretrain.train_iters=61", ["pretrain", "upcycle", "cpt", "export", "sft", "dpo", "eval"]),
    ("upcycle.router_init=zero", ["upcycle", "cpt", "export", "sft", "dpo", "eval"]),
    ("eval.max_new_tokens=8", ["eval"]),
    ("tokenizer.vocab_size=4000", ["tokenizer", "pack", "pretrain", "upcycle", "cpt", "export", "sft", "dpo", "eval"]),
])
def test_a_changed_key_reruns_its_stage_and_the_stages_after_it_only(fakes, demo_config, override, expected):
    run_pipeline(demo_config())
    fakes.calls.clear()
    cfg = demo_config(override)
    reason = next(d.reason for d in decide(cfg, load_state(cfg.run.dir)) if d.stage == expected[0])
    assert reason == f"config changed: {override.split('.')[0]}"
    run_pipeline(cfg)
    assert fakes.calls == expected


def test_a_deleted_output_or_changed_input_reruns_that_stage_and_its_dependents(fakes, demo_config):
    cfg = demo_config()
    run_pipeline(cfg)
    (cfg.run.dir / "cpt" / "out.txt").unlink()
    fakes.calls.clear()
    run_pipeline(cfg)
    assert fakes.calls == ["cpt", "export", "sft", "dpo", "eval"]
    fakes.sources["data"].write_text("other text\n", encoding="utf-8")
    assert actions(cfg)["data"] == "run" and actions(cfg)["tokenizer"] == "skip"
    fakes.calls.clear()
    run_pipeline(cfg)
    assert fakes.calls == [s for s in ALL if s != "tokenizer"]


def test_from_and_only_force_their_stages_and_hold_the_others(fakes, demo_config):
    cfg = demo_config()
    run_pipeline(cfg)
    fakes.calls.clear()
    run_pipeline(cfg, only="cpt")
    assert fakes.calls == ["cpt"]
    fakes.calls.clear()
    decisions = run_pipeline(cfg, start="sft")
    assert fakes.calls == ["sft", "dpo", "eval"]
    assert [d.action for d in decisions] == ["hold"] * 7 + ["run"] * 3


def test_a_failed_stage_keeps_earlier_outputs_and_the_rerun_continues_from_it(fakes, demo_config):
    cfg = demo_config()
    fakes.fail["cpt"] = DataError("shard 3 is truncated")
    with pytest.raises(Exception, match="stage cpt: shard 3 is truncated"):
        run_pipeline(cfg)
    assert fakes.calls == ALL[:ALL.index("cpt") + 1]
    state = load_state(cfg.run.dir)["stages"]
    assert state["cpt"]["status"] == "failed" and state["cpt"]["error"] == "shard 3 is truncated"
    assert all((cfg.run.dir / s / "out.txt").is_file() for s in ALL[:ALL.index("cpt")])
    del fakes.fail["cpt"]
    (cfg.run.dir / "cpt").mkdir(exist_ok=True)
    (cfg.run.dir / "cpt" / "partial").write_text("checkpoint in progress")
    fakes.calls.clear()
    decisions = {d.stage: d for d in run_pipeline(cfg)}
    assert fakes.calls == ALL[ALL.index("cpt"):]
    assert decisions["cpt"].reason == "last run failed; continuing it"
    assert (cfg.run.dir / "cpt" / "partial").exists(), "a failed resumable stage must be resumed, not cleared"


def test_a_resumable_stage_whose_config_changed_starts_from_an_empty_folder(fakes, demo_config):
    run_pipeline(demo_config())
    stale = demo_config().run.dir / "pretrain" / "stale-checkpoint"
    stale.write_text("from the old config")
    run_pipeline(demo_config("pretrain.optimizer.lr=1e-3"))
    assert not stale.exists()
    assert (stale.parent / "out.txt").is_file()
