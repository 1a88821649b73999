"""Skip logic: what runs again after a config change, a deleted output, a changed input or a failure."""

import json
import shutil

import pytest

from factory.config import load_config
from factory.decisions import decide
from factory.errors import ConfigError, DataError
from factory.pipeline import run_pipeline
from factory.registry import CHAIN, STAGES, chain_problems
from factory.run_state import STATE_NAME, load_state

ALL = ["tokenizer", "data", "pack", "pretrain", "synth", "upcycle", "cpt", "export", "sft", "dpo", "eval"]


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


@pytest.mark.parametrize("override, expected, fresh", [
    ("sft.max_steps=9", ["sft", "dpo", "eval"], set()),
    ("upcycle.router_init=zero", ["upcycle", "cpt", "export", "sft", "dpo", "eval"], {"cpt"}),
    ("eval.max_new_tokens=8", ["eval"], set()),
    ("tokenizer.vocab_size=4000", ["tokenizer", "pack", "pretrain", "synth", "upcycle", "cpt", "export", "sft", "dpo", "eval"],
     {"pretrain", "synth", "cpt"}),
])
def test_a_changed_key_reruns_its_stage_and_the_stages_after_it_only(fakes, demo_config, override, expected, fresh):
    run_pipeline(demo_config())
    fakes.calls.clear()
    cfg = demo_config(override)
    reason = next(d.reason for d in decide(cfg, load_state(cfg.run.dir)) if d.stage == expected[0])
    assert reason == f"config changed: {override.split('=')[0]}"
    run_pipeline(cfg, fresh=fresh)
    assert fakes.calls == expected
    for stage in fresh:  # the earlier output of each resumable stage that started over is kept, moved aside
        moved, = cfg.run.dir.glob(f"{stage}.prev-*")
        assert (moved / "out.txt").is_file() and (cfg.run.dir / stage / "out.txt").is_file()


@pytest.mark.parametrize("override", [
    "pretrain.log_interval=3", "pretrain.tensorboard=false", "pretrain.wandb_project=x", "pretrain.eval_iters=3",
    "pretrain.fault.hang_timeout_minutes=5", "pretrain.checkpoint.keep_last=5", "cpt.checkpoint.save_interval=7",
    "runtime.distributed_timeout_minutes=30", "tokenizer.num_workers=2", "data.num_workers=1", "pack.task_bytes=9999",
    "sft.logging_steps=3", "sft.gradient_checkpointing=true"])
def test_operational_keys_rerun_nothing_and_delete_nothing(fakes, demo_config, override):
    run_pipeline(demo_config())
    before = sorted(p.relative_to(demo_config().run.dir) for p in demo_config().run.dir.rglob("*"))
    fakes.calls.clear()
    decisions = run_pipeline(demo_config(override))
    assert fakes.calls == [] and {d.action for d in decisions} == {"skip"}
    after = sorted(p.relative_to(demo_config().run.dir) for p in demo_config().run.dir.rglob("*"))
    assert before == after


def test_a_larger_train_iters_continues_the_run(fakes, demo_config):
    run_pipeline(demo_config())
    fakes.calls.clear()
    cfg = demo_config("pretrain.train_iters=61")
    decisions = {d.stage: d for d in decide(cfg, load_state(cfg.run.dir))}
    assert decisions["pretrain"].reason == "continues: pretrain.train_iters 60 -> 61"
    assert not decisions["pretrain"].fresh
    # cpt continued an upcycle of the shorter run, synth sampled its teacher: both start over
    run_pipeline(cfg, fresh={"synth", "cpt"})
    assert fakes.calls == ["pretrain", "synth", "upcycle", "cpt", "export", "sft", "dpo", "eval"]
    assert not list(cfg.run.dir.glob("pretrain.prev-*")) and list(cfg.run.dir.glob("cpt.prev-*"))


def test_a_deleted_output_or_changed_input_reruns_that_stage_and_its_dependents(fakes, demo_config):
    cfg = demo_config()
    run_pipeline(cfg)
    (cfg.run.dir / "cpt" / "out.txt").unlink()
    fakes.calls.clear()
    run_pipeline(cfg, fresh={"cpt"})
    assert fakes.calls == ["cpt", "export", "sft", "dpo", "eval"]
    fakes.sources["data"].write_text("other text\n", encoding="utf-8")
    assert actions(cfg)["data"] == "run" and actions(cfg)["tokenizer"] == "skip"
    fakes.calls.clear()
    run_pipeline(cfg, fresh={"pretrain", "synth", "cpt"})
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
    assert [d.action for d in decisions] == ["hold"] * 8 + ["run"] * 3


def test_a_failed_stage_keeps_earlier_outputs_and_the_rerun_continues_from_it(fakes, demo_config):
    cfg = demo_config()
    fakes.fail["cpt"] = DataError("shard 3 is truncated")
    fakes.partial.add("cpt")
    with pytest.raises(Exception, match="stage cpt: shard 3 is truncated"):
        run_pipeline(cfg)
    assert fakes.calls == ALL[:ALL.index("cpt") + 1]
    state = load_state(cfg.run.dir)["stages"]
    assert state["cpt"]["status"] == "failed" and state["cpt"]["error"] == "shard 3 is truncated"
    assert all((cfg.run.dir / s / "out.txt").is_file() for s in ALL[:ALL.index("cpt")])
    del fakes.fail["cpt"]
    assert (cfg.run.dir / "cpt" / "partial").is_file()
    fakes.calls.clear()
    decisions = {d.stage: d for d in run_pipeline(cfg)}
    assert fakes.calls == ALL[ALL.index("cpt"):]
    assert decisions["cpt"].reason == "last run failed; continuing it"
    assert (cfg.run.dir / "cpt" / "partial").exists(), "a failed resumable stage must be resumed, not cleared"


def test_a_resumable_stage_whose_result_keys_changed_is_refused_then_moved_aside_with_fresh(fakes, demo_config):
    run_pipeline(demo_config())
    run_dir = demo_config().run.dir
    checkpoint = run_dir / "pretrain" / "stale-checkpoint"
    checkpoint.write_text("a month of training")
    fakes.calls.clear()
    with pytest.raises(ConfigError) as info:
        run_pipeline(demo_config("pretrain.optimizer.lr=1e-3"))
    assert info.value.problems[0].startswith("pretrain: config changed: pretrain.optimizer.lr; its earlier output "
                                             f"{run_dir / 'pretrain'} cannot be continued with this config. "
                                             "Nothing was run or deleted: pass --fresh pretrain")
    assert fakes.calls == [] and checkpoint.read_text() == "a month of training"
    run_pipeline(demo_config("pretrain.optimizer.lr=1e-3"), fresh={"pretrain", "synth", "cpt"})
    moved, = run_dir.glob("pretrain.prev-*")
    assert (moved / "stale-checkpoint").read_text() == "a month of training"
    assert (run_dir / "pretrain" / "out.txt").is_file() and not checkpoint.exists()
    state = load_state(run_dir)["stages"]["pretrain"]
    assert state["moved_aside"] == str(moved)


def test_fresh_names_only_stages_of_the_config(fakes, demo_config):
    with pytest.raises(ConfigError, match="--fresh import: not a stage of this config"):
        run_pipeline(demo_config(), fresh={"import"})


def test_a_copied_run_folder_is_refused_with_the_reason_its_paths_changed(fakes, demo_config, tmp_path):
    run_pipeline(demo_config())
    copied = tmp_path / "copied"
    shutil.copytree(tmp_path / "run", copied)
    fakes.calls.clear()
    with pytest.raises(ConfigError) as info:
        run_pipeline(load_config("configs/demo-cpu.yaml", [f"run.dir={copied}"]))
    first = info.value.problems[0]
    assert first.startswith("pretrain: upstream runs: ") and (
        f"(pipeline.json was written for run.dir={tmp_path / 'run'}: the run folder was moved or copied, so every "
        "${run.dir} path of the config changed)") in first, first
    assert fakes.calls == [] and "Nothing was run or deleted" in first
