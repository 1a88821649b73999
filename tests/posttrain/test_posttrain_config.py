"""Post-training presets validate and carry the published recipes; section rules name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factory.config import load_config
from factory.errors import ConfigError
from tests.posttrain.conftest import DPO_DATA, SFT_DATA, post_config


def test_tanuki_and_shisa_presets_carry_their_recipes():
    tanuki_sft = load_config("configs/tanuki-sft.yaml").sft
    assert (tanuki_sft.learning_rate, tanuki_sft.epochs, tanuki_sft.lora) == (5e-6, 1, None)
    shisa_sft = load_config("configs/shisa-v2-sft.yaml").sft
    assert (shisa_sft.learning_rate, shisa_sft.epochs, shisa_sft.max_length, shisa_sft.packing,
            shisa_sft.global_batch_size, shisa_sft.neftune_noise_alpha) == (1e-5, 3, 8192, True, 128, 5)
    assert shisa_sft.datasets[0].format == "sharegpt"
    assert load_config("configs/tanuki-dpo.yaml").dpo.beta == 0.01
    assert load_config("configs/tanuki-dpo.yaml", ["dpo.lora.r=16"]).dpo.lora.r == 16  # the 8x8B's LoRA
    shisa_dpo = load_config("configs/shisa-v2-dpo.yaml").dpo
    assert (shisa_dpo.beta, shisa_dpo.learning_rate, shisa_dpo.global_batch_size) == (0.1, 1.25e-7, 64)


def test_zero3_accelerate_config_and_demo_sections():
    zero3 = yaml.safe_load(Path("configs/accelerate/zero3.yaml").read_text())
    assert zero3["distributed_type"] == "DEEPSPEED" and zero3["deepspeed_config"]["zero_stage"] == 3
    assert zero3["deepspeed_config"]["zero3_save_16bit_model"] is True
    demo = load_config("configs/demo-cpu.yaml")
    files = [d.path for d in demo.sft.datasets + demo.dpo.datasets] + [h.path for h in demo.eval.heldout]
    shipped = [p for p in files + [demo.eval.prompts] if not p.is_relative_to(demo.run.dir)]
    made = [p for p in files if p.is_relative_to(demo.run.dir)]  # the synth stage's records
    assert all(p.is_file() for p in shipped), shipped  # the demo's own data ships with the repo
    assert sorted(p.relative_to(demo.run.dir).as_posix() for p in made) == ["synth/dpo.jsonl", "synth/sft.jsonl"]


def test_section_rules_collect_every_problem(tmp_path):
    with pytest.raises(ConfigError) as info:
        post_config(tmp_path, sft={"datasets": DPO_DATA + [{"path": "x.jsonl", "format": "preference"}],
                                   "learning_rate": 1e-5, "global_batch_size": 6, "micro_batch_size": 4},
                    dpo={"datasets": SFT_DATA[:1] + [{"path": "y.jsonl", "format": "messages"}],
                         "learning_rate": 1e-6}, eval={})
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "sft.global_batch_size=6: must be a multiple of micro_batch_size (4)",
        "sft.datasets[1].format=preference: not a format of this stage "
        "(allowed: auto, messages, sharegpt, prompt_completion)",
        "dpo.datasets[1].format=messages: not a format of this stage (allowed: auto, preference)",
        "eval={}: needs heldout text, a prompts file, harness or mt_bench (nothing to measure)"]


def test_benchmark_rules_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        post_config(tmp_path, eval={
            "harness": {"tasks": ["jnli", "jglue_qa", "jnli"]},
            "mt_bench": {"questions": [], "judge": {"serve": "self", "base_url": "http://x/v1"}}})
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "eval.harness.tasks=jglue_qa: not a task (supported: jcommonsenseqa, jnli, jsts, jsquad)",
        "eval.harness.tasks=['jnli', 'jglue_qa', 'jnli']: tasks must be unique",
        "eval.mt_bench.judge=base_url=http://x/v1, serve=self: give exactly one of base_url (an endpoint) or "
        "serve (a local HF folder)",
        "eval.mt_bench.judge.model=None: required with base_url (the judge model's name)",
        "eval.mt_bench.questions=[]: must name at least one question"]


def test_demo_eval_runs_jglue_and_mt_bench_on_the_rows_shipped_with_the_repository():
    ec = load_config("configs/demo-cpu.yaml").eval
    assert ec.data_dir == Path("configs/demo-data/eval")  # in the clone: the demo needs no download
    assert ec.harness.tasks == ["jcommonsenseqa", "jnli"] and ec.harness.limit
    assert ec.mt_bench.judge.serve == "self" and len(ec.mt_bench.questions) == 3
    assert [c.path.parent.name for c in ec.checkpoints] == ["pretrain", "cpt"]
