"""Every stage's output folder is declared once (factory/outputs.py): an `output_dir` moves what its readers read."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory import decisions
from factory.config import load_config
from factory.data import pack_stage
from factory.errors import ConfigError
from factory.posttrain import eval_stage, training
from factory.registry import CHAIN, STAGES
from factory.synth import synth_stage
from factory.train.training_stage import CPT, PRETRAIN, plan_training
from factory.upcycle import upcycle_stage

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-cpu.yaml"


def _demo(tmp_path: Path, *overrides: str):
    return load_config(DEMO, [f"run.dir={tmp_path / 'run'}", *overrides])


def test_each_stage_declares_the_folder_it_owns_from_its_own_section(tmp_path):
    cfg = _demo(tmp_path)
    for stage in CHAIN:
        assert stage.outputs(cfg).dir.is_relative_to(cfg.run.dir), stage.name
    elsewhere = tmp_path / "elsewhere"
    for stage in CHAIN:
        required = [f"hf_import.hf_dir={tmp_path}"] if stage.section == "hf_import" else []  # not in the demo
        moved = _demo(tmp_path, f"{stage.section}.output_dir={elsewhere / stage.name}", *required)
        declared = stage.outputs(moved)
        assert elsewhere / stage.name in (declared.dir, getattr(declared, "checkpoints", None)), stage.name
        if stage.resumes:  # what the pipeline moves aside on --fresh is the stage's own folder
            assert decisions.output_folder(moved, stage.name) == declared.dir


def test_a_moved_tokenizer_is_what_pack_training_synth_export_and_eval_read(tmp_path):
    tok = tmp_path / "tok"
    cfg = _demo(tmp_path, f"tokenizer.output_dir={tok}", "synth.training.tokenizer_dir=null")
    assert pack_stage.tokenizer_model_path(cfg) == tok / "tokenizer.model"
    assert tok / "tokenizer.model" in plan_training(cfg, PRETRAIN).reads
    assert synth_stage._tokenizer_dir(cfg, cfg.synth) == tok
    _refused_naming(lambda: STAGES["export"].plan(cfg), tok)
    eval_cfg = _demo(tmp_path, f"tokenizer.output_dir={tok}", f"eval.model={_megatron_root(tmp_path)}")
    _refused_naming(lambda: eval_stage.plan(eval_cfg), tok)


def test_moved_pack_pretrain_export_and_sft_outputs_are_the_next_stages_defaults(tmp_path):
    pack, pretrain = tmp_path / "pack", tmp_path / "pretrain"
    cfg = _demo(tmp_path, f"pack.output_dir={pack}", f"pretrain.output_dir={pretrain}", "cpt.init_from=null",
                "cpt.phases=[]")
    assert pack / "blend.json" in plan_training(cfg, PRETRAIN).reads
    cpt_plan = plan_training(cfg, CPT)
    assert pack / "blend.json" in cpt_plan.reads and pretrain / "checkpoints" in cpt_plan.reads
    assert upcycle_stage.source_path(cfg) == pretrain / "checkpoints"

    export, sft, dpo = tmp_path / "x" / "hf", tmp_path / "s" / "hf", tmp_path / "d" / "hf"
    cfg = _demo(tmp_path, f"export.output_dir={export}", f"sft.output_dir={sft}", f"dpo.output_dir={dpo}",
                "sft.model=null", "dpo.model=null", "eval.model=null")
    assert training.paths(cfg, STAGES["sft"]).model == export and training.paths(cfg, STAGES["sft"]).output == sft
    assert training.paths(cfg, STAGES["dpo"]).model == sft and training.paths(cfg, STAGES["dpo"]).output == dpo
    _refused_naming(lambda: eval_stage.plan(cfg), dpo)
    assert eval_stage._benchmark_target(cfg, _megatron_root(tmp_path)) == export


def _megatron_root(tmp_path: Path) -> Path:
    """A folder the eval stage takes for a Megatron checkpoint root (its tracker is what it looks for)."""
    root = tmp_path / "ckpt"
    root.mkdir(exist_ok=True)
    (root / "latest_checkpointed_iteration.txt").write_text("1")
    return root


def _refused_naming(plan, path: Path) -> None:
    """The plan stops on a missing input, and the input it names is `path` (what it would have read)."""
    with pytest.raises(ConfigError) as e:
        plan()
    assert str(path) in str(e.value), e.value
