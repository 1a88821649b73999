"""The memory plan in closed form: parameters per stage add up, layouts move memory where Megatron puts it,
and a config that cannot fit is refused with one line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import load_config
from factory.errors import ConfigError
from factory.model.build import parameter_counts
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig
from factory.train.memory import (GIB, TrainingShape, layer_activation_elements, layer_parameters,
                                  plan_memory, stage_parameters, training_shape)

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelConfig(num_layers=8, hidden_size=256, ffn_hidden_size=1024, num_attention_heads=8, num_query_groups=4,
                    seq_length=512, vocab_size=5000)
MOE = ModelConfig(**{**MODEL.model_dump(), "moe": {"num_experts": 4, "router_topk": 2}})


def shape(**kw) -> TrainingShape:
    base = dict(world_size=8, micro_batch_size=2, micro_batches=8, param_bytes=2, distributed_optimizer=True)
    return TrainingShape(**{**base, **kw})


@pytest.mark.parametrize("model", [MODEL, MOE], ids=["dense", "moe"])
def test_stage_parameters_add_up_to_the_model(model):
    layout = ParallelConfig(pipeline=4)
    total = sum(sum(stage_parameters(model, layout, s)) for s in range(4))
    assert total == parameter_counts(model).total


def test_tensor_and_expert_parallel_divide_what_they_shard():
    one = sum(stage_parameters(MOE, ParallelConfig(), 0))
    dense, expert = stage_parameters(MOE, ParallelConfig(expert=4), 0)
    assert expert == pytest.approx(stage_parameters(MOE, ParallelConfig(), 0)[1] / 4)
    assert dense + expert < one
    tp = stage_parameters(MODEL, ParallelConfig(tensor=2), 0)[0]
    assert tp < 0.55 * one  # everything but the norms is split


def test_the_first_pipeline_stage_holds_the_most_micro_batches():
    plan = plan_memory(MODEL, ParallelConfig(pipeline=4), shape())
    activations = [s.activations for s in plan.stages]
    assert activations[0] > activations[1] > activations[2]
    assert plan.stages[3].logits > 0 and plan.stages[0].logits == 0


def test_recompute_and_the_distributed_optimizer_lower_what_they_should():
    layout = ParallelConfig()
    none, full = (plan_memory(MODEL, layout, shape(recompute=r)).largest for r in ("none", "full"))
    assert full.activations < none.activations / 3
    sharded, whole = (plan_memory(MODEL, layout, shape(distributed_optimizer=d)).largest for d in (True, False))
    assert sharded.optimizer == pytest.approx(whole.optimizer / 8)


def test_transformer_engine_layers_save_less_in_their_attention_and_norms():
    layout = ParallelConfig(tensor=4, sequence_parallel=True)
    for model in (MODEL, MOE):
        local, te = (layer_activation_elements(model, layout, 1, transformer_engine=e) for e in (False, True))
        assert te < local
    # the FFN runs Megatron's own SwiGLU code under both specs: the saving is the attention and norm part only
    dense_saving = (layer_activation_elements(MODEL, layout, 1) - layer_activation_elements(MODEL, layout, 1, True))
    moe_saving = (layer_activation_elements(MOE, layout, 1) - layer_activation_elements(MOE, layout, 1, True))
    assert 0 < moe_saving == dense_saving


@pytest.mark.parametrize("engine", [False, True], ids=["local", "te"])
def test_the_fused_swiglu_saves_two_intermediate_copies_fewer(engine):
    """Fused: fc1's output (2f) and fc2's input (f); unfused also SiLU's output and the offset linear half (2f);
    each routed MoE copy also drops its probability product (f)."""
    layout = ParallelConfig(tensor=2)
    unfused, fused = (layer_activation_elements(MODEL, layout, 1, engine, fused_swiglu=f) for f in (False, True))
    assert unfused - fused == 2 * MODEL.ffn_hidden_size / 2
    unfused, fused = (layer_activation_elements(MOE, layout, 1, engine, fused_swiglu=f) for f in (False, True))
    assert unfused - fused == MOE.moe.router_topk * 3 * MOE.ffn_hidden_size / layout.expert_tensor_size


@pytest.mark.parametrize("preset,section", [("tanuki-8b", "pretrain"), ("tanuki-8x8b", "cpt"),
                                            ("llm-jp-3-172b", "pretrain")])
def test_presets_fit_80_gib(preset, section):
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
    plan = plan_memory(cfg.model, cfg.parallel, training_shape(cfg, getattr(cfg, section), section))
    assert 10 * GIB < plan.largest.total < 80 * GIB, plan.describe()


def test_the_172b_preset_runs_only_on_transformer_engine_layers():
    """LLM-jp's layout (TP4 PP16, sequence parallel, selective recompute) fits 80 GB on TE layers; without them
    sequence parallelism cannot build, which the config refuses in one line before any plan."""
    cfg = load_config(ROOT / "configs" / "llm-jp-3-172b.yaml")
    assert plan_memory(cfg.model, cfg.parallel, training_shape(cfg, cfg.pretrain, "pretrain")).largest.total < 80 * GIB
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs" / "llm-jp-3-172b.yaml", ["runtime.transformer_engine=disabled"])
    (line,) = err.value.problems
    assert "parallel.sequence_parallel=True: needs Transformer Engine layers" in line, line
    assert line.endswith("runtime.transformer_engine is disabled")


def test_the_plan_counts_the_swiglu_fusion_the_run_decides():
    """megatron-core 0.19.2 leaves bias_activation_fusion off; the decision turns it on on CUDA, and the 172B plan
    assumed it: with it off, stage 0 would hold 14 GiB more (5 intermediate copies per token and layer, not 3)."""
    cfg = load_config(ROOT / "configs" / "llm-jp-3-172b.yaml")
    shape = training_shape(cfg, cfg.pretrain, "pretrain")
    assert shape.fused_swiglu and shape.freed_pipeline_outputs and shape.transformer_engine
    fused, unfused = (plan_memory(cfg.model, cfg.parallel, dataclasses.replace(shape, fused_swiglu=f)).largest.total
                      for f in (True, False))
    assert (unfused - fused) / GIB == pytest.approx(14.2, abs=0.1)
    cpu = load_config(ROOT / "configs" / "demo-cpu.yaml")
    assert not training_shape(cpu, cpu.pretrain, "pretrain").fused_swiglu  # a CPU run has no fused kernels


def test_fp8_layers_save_their_gemm_inputs_in_one_byte_and_keep_fp8_weight_copies():
    layout = ParallelConfig(pipeline=4)
    bf16, fp8 = (plan_memory(MODEL, layout, shape(fp8_bf16_layers=f)) for f in (None, 1))
    first, middle = 0, 1  # the first stage holds layer 0, kept in bf16, and one FP8 layer
    assert fp8.stages[middle].fp8_weights == pytest.approx(2 * 2 * sum(layer_parameters(MODEL, layout)))
    assert fp8.stages[first].fp8_weights == fp8.stages[middle].fp8_weights / 2
    assert fp8.stages[middle].activations < bf16.stages[middle].activations
    assert fp8.stages[first].activations - bf16.stages[first].activations > \
        (fp8.stages[middle].activations - bf16.stages[middle].activations)  # one FP8 layer there, two here


def test_freed_pipeline_outputs_lower_every_stage_but_the_last():
    layout = ParallelConfig(pipeline=4)
    kept, freed = (plan_memory(MODEL, layout, shape(freed_pipeline_outputs=f)) for f in (False, True))
    assert all(f.activations < k.activations for f, k in zip(freed.stages[:-1], kept.stages[:-1]))
    assert freed.stages[-1].activations == kept.stages[-1].activations


def test_a_layout_that_cannot_fit_exits_2_with_one_line(tmp_path):
    cmd = [sys.executable, "-m", "factory.stage", "pretrain", "--config", str(ROOT / "configs" / "tanuki-8b.yaml"),
           "parallel.pipeline=1", "pretrain.micro_batch_size=8", "--dry-run"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "launch.gpu_memory_gb=80" in lines[0] and "TP1/PP1" in lines[0], proc.stderr


def test_a_training_stage_plans_at_its_own_launch_keys():
    """`launch.stages.pretrain` sets the world the pretrain memory plan divides the batch over, and its GPU size."""
    cfg = load_config(ROOT / "configs" / "tanuki-8b.yaml", ["launch.stages={pretrain: {nodes: 4}}"])
    assert cfg.launch.nodes * 8 != 32 and training_shape(cfg, cfg.pretrain, "pretrain").world_size == 4 * 8
    with pytest.raises(ConfigError, match=r"pretrain: does not fit launch.gpu_memory_gb=20"):
        load_config(ROOT / "configs" / "tanuki-8b.yaml", ["launch.stages={pretrain: {gpu_memory_gb: 20}}"])
