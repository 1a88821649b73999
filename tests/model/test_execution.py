"""The execution decision as a table: given a capability set (no GPU needed), which fusions, FP8 fields, experts
kernel and data-parallel overlap a run gets, and why each thing is off; its fields are TransformerConfig's."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
import subprocess
import sys

import pytest

from factory.errors import ConfigError
from factory.model.config import ModelConfig
from factory.model.execution import Execution, Overlap, decide
from factory.runtime.capabilities import CPU, Capabilities
from factory.runtime.config import Fp8Config, ParallelConfig
from tests.conftest import ROOT, TINY_DENSE, TINY_MOE, make_config

DENSE = ModelConfig.model_validate(TINY_DENSE["model"])
MOE = ModelConfig.model_validate({**TINY_MOE["model"], "moe": {**TINY_MOE["model"]["moe"], "grouped_gemm": True}})
H100 = Capabilities(cuda=True, device_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))
H100_TE = dataclasses.replace(H100, transformer_engine=True, te_version=(2, 8), apex_grad_accumulation=True)
PP2 = ParallelConfig(pipeline=2)


def test_a_cpu_run_turns_every_kernel_off_and_says_why():
    decision = decide(CPU, MOE, PP2, "fp32", None)
    assert decision.describe_fusions() == (
        "fusions: pipeline-dealloc; off: swiglu (CPU run), bias-dropout-add (CPU run), rope (CPU run), "
        "grad-accum (CPU run), cross-entropy (CPU run), moe-permute (CPU run), moe-router (CPU run)")
    assert not decision.grouped_gemm and decision.warnings[0].startswith(
        "model.moe.grouped_gemm=true: no grouped-GEMM kernel here (a CPU run); the experts run as a sequential "
        "per-expert loop (SequentialMLP)")


def test_a_bare_hopper_node_fuses_what_megatron_itself_provides():
    """No Transformer Engine, no Apex (the device machine): Megatron's own kernels on, the rest off with reasons."""
    decision = decide(H100, DENSE, ParallelConfig(), "bf16", None)
    assert decision.describe_fusions() == (
        "fusions: swiglu, bias-dropout-add, cross-entropy; off: rope (needs Transformer Engine layers >= 1.4), "
        "grad-accum (no Apex fused_weight_gradient_mlp_cuda)")
    assert decision.fields() == {"bias_activation_fusion": True, "bias_dropout_fusion": True,
                                 "apply_rope_fusion": False, "gradient_accumulation_fusion": False,
                                 "cross_entropy_loss_fusion": True, "cross_entropy_fusion_impl": "native"}


def test_a_full_node_fuses_everything_and_runs_grouped_gemm():
    decision = decide(H100_TE, MOE, PP2, "bf16", None)
    assert decision.describe_fusions() == ("fusions: swiglu, bias-dropout-add, rope, grad-accum, cross-entropy, "
                                           "moe-permute, moe-router, pipeline-dealloc")
    assert decision.grouped_gemm and not decision.warnings


@pytest.mark.parametrize("version, off", [((2, 1), "moe-router (needs Transformer Engine layers >= 2.7)"),
                                          ((1, 9), "moe-permute (needs Transformer Engine layers >= 2.1)")])
def test_each_te_kernel_needs_the_version_that_ships_it(version, off):
    decision = decide(dataclasses.replace(H100_TE, te_version=version), MOE, ParallelConfig(), "bf16", None)
    assert off in decision.describe_fusions()
    assert decision.grouped_gemm  # GroupedLinear exists from TE 1.9


def test_the_z_loss_step_leaves_the_fused_cross_entropy_off():
    decision = decide(H100_TE, DENSE, ParallelConfig(), "bf16", None, Execution(model_loss=False))
    assert "cross-entropy (the z-loss step computes the loss from the logits)" in decision.describe_fusions()


def test_grouped_gemm_without_its_kernel_falls_back_with_one_warning_when_the_model_is_built(runtime, caplog):
    from factory.model.build import build_gpt_model

    model = make_config(TINY_MOE, model={"moe": {**TINY_MOE["model"]["moe"], "grouped_gemm": True}}).model
    with caplog.at_level(logging.WARNING, logger="factory.model.build"):
        built = build_gpt_model(model, runtime)
    warnings = [r.getMessage() for r in caplog.records if "grouped_gemm" in r.getMessage()]
    assert len(warnings) == 1 and "SequentialMLP" in warnings[0]
    assert type(built.decoder.layers[0].mlp.experts).__name__ == "SequentialMLP"
    assert built.config.moe_grouped_gemm is False


def test_fp8_fields_follow_the_recipe():
    current = decide(H100_TE, DENSE, ParallelConfig(), "fp8", Fp8Config())
    assert {k: v for k, v in current.fields().items() if "fp8" in k or "bf16" in k} == {
        "fp8": "hybrid", "fp8_recipe": "tensorwise", "first_last_layers_bf16": True,
        "num_layers_at_start_in_bf16": 1, "num_layers_at_end_in_bf16": 1}
    assert current.fp8_layers == DENSE.num_layers - 2
    delayed = decide(H100_TE, DENSE, ParallelConfig(), "fp8", Fp8Config(recipe="delayed", bf16_layers=0))
    assert delayed.fields()["fp8_recipe"] == "delayed" and delayed.fields()["fp8_amax_history_len"] == 1024
    assert delayed.fields()["first_last_layers_bf16"] is False
    assert decide(H100_TE, DENSE, ParallelConfig(), "bf16", Fp8Config()).fp8 is None  # read only with fp8


def test_every_decided_field_is_a_transformer_config_field_megatron_accepts():
    """The fullest decisions (TE, Apex, PP; FP8 with bf16 ends on a dense model, every MoE fusion on an MoE) build
    TransformerConfigs; Megatron checks the TE kernels' presence itself, so those fields are left out here."""
    import torch
    from megatron.core.transformer import TransformerConfig

    needs_te = ("apply_rope_fusion", "moe_permute_fusion", "moe_router_fusion")
    names = {f.name for f in dataclasses.fields(TransformerConfig)}
    common = dict(num_layers=4, hidden_size=64, num_attention_heads=4, pipeline_model_parallel_size=2,
                  pipeline_dtype=torch.bfloat16, bf16=True, params_dtype=torch.bfloat16)
    for model, precision, moe in ((DENSE, "fp8", {}), (MOE, "bf16", dict(num_moe_experts=8, moe_router_topk=2))):
        model = ModelConfig.model_validate({**model.model_dump(), "num_layers": 4})
        fields = decide(H100_TE, model, PP2, precision, Fp8Config()).fields()
        assert set(fields) <= names
        TransformerConfig(**common, **moe, **{k: v for k, v in fields.items() if k not in needs_te})


@pytest.mark.parametrize("caps, overlap, dp, distributed, expected", [
    (CPU, Overlap(), 2, False, "data-parallel overlap: off (CPU run; set data_parallel.overlap_grad_reduce=true to "
                               "overlap gloo collectives)"),
    (CPU, Overlap(grad_reduce=True), 2, False, "data-parallel overlap: grad reduce on, param gather off (plain "
                                               "optimizer), bucket Megatron's max(40M, 1M x DP) elements"),
    (H100, Overlap(), 1, True, "data-parallel overlap: off (data-parallel size 1)"),
    (H100, Overlap(bucket_size=10**8), 8, True, "data-parallel overlap: grad reduce on, param gather on "
                                                "(distributed optimizer), bucket 100,000,000 elements"),
    (H100, Overlap(param_gather=False), 8, True, "data-parallel overlap: grad reduce on, param gather off "
                                                 "(distributed optimizer), bucket Megatron's max(40M, 1M x DP) elements"),
    (H100, Overlap(grad_reduce=False), 8, True, "data-parallel overlap: off (data_parallel.overlap_grad_reduce=false)"),
])
def test_data_parallel_overlap(caps, overlap, dp, distributed, expected):
    execution = Execution(distributed_optimizer=True, overlap=overlap)
    decision = decide(caps, DENSE, ParallelConfig(), "bf16", None, execution, dp, distributed)
    assert decision.describe_overlap() == expected
    ddp = decision.ddp_fields()
    assert ddp["use_distributed_optimizer"] is distributed and ddp["grad_reduce_in_fp32"]
    assert ddp["overlap_param_gather"] is (ddp["overlap_grad_reduce"] and distributed and overlap.param_gather is not False)


# --- combinations that would crash at build, refused when the config is read ---------------------------------

TE_HERE = importlib.util.find_spec("transformer_engine") is not None
no_te_here = pytest.mark.skipif(TE_HERE, reason="transformer_engine is importable here")


def _problems(**sections) -> list[str]:
    with pytest.raises(ConfigError) as err:
        make_config(TINY_DENSE, **sections)
    return err.value.problems


@pytest.mark.parametrize("runtime, why", [
    ({"device": "cpu"}, "runtime.device is cpu"),
    ({"device": "cuda", "transformer_engine": "disabled"}, "runtime.transformer_engine is disabled"),
    pytest.param({"device": "cuda"}, "transformer_engine is not importable here; install it, or set "
                 "runtime.transformer_engine=required to plan for the GPU nodes' copy", marks=no_te_here),
])
def test_sequence_parallel_without_transformer_engine_is_one_line(runtime, why):
    (line,) = _problems(runtime=runtime, parallel={"tensor": 2, "sequence_parallel": True})
    assert line == (f"<config>: parallel.sequence_parallel=True: needs Transformer Engine layers (Megatron's local "
                    f"RMSNorm does not shard over the sequence) and {why}")


def test_sequence_parallel_planned_for_the_nodes_transformer_engine_is_accepted():
    cfg = make_config(TINY_DENSE, runtime={"device": "cuda", "transformer_engine": "required"},
                      parallel={"tensor": 2, "sequence_parallel": True})
    assert cfg.parallel.sequence_parallel


@pytest.mark.parametrize("runtime, line", [
    ({"device": "cpu", "precision": "fp8"}, "runtime.precision=fp8: FP8 GEMMs need a CUDA device (runtime.device is cpu)"),
    ({"device": "cuda", "precision": "fp8", "transformer_engine": "disabled"},
     "runtime.precision=fp8: FP8 runs through Transformer Engine layers; runtime.transformer_engine is disabled"),
    ({"device": "cuda", "precision": "fp8", "transformer_engine": "required", "fp8": {"recipe": "delayed"}},
     "runtime.fp8.bf16_layers=1: Megatron-Core keeps layers in bf16 only under current scaling; set "
     "runtime.fp8.recipe=current or runtime.fp8.bf16_layers=0"),
    ({"device": "cuda", "precision": "fp8", "transformer_engine": "required", "fp8": {"bf16_layers": 2}},
     "runtime.fp8.bf16_layers=2: more than the 1 layers of a pipeline stage (model.num_layers / parallel.pipeline)"),
])
def test_fp8_combinations_that_cannot_build_are_one_line(runtime, line):
    parallel = {"pipeline": 2} if runtime.get("fp8", {}).get("bf16_layers") == 2 else {}
    assert _problems(runtime=runtime, parallel=parallel) == [f"<config>: {line}"]


@no_te_here
def test_fp8_without_transformer_engine_is_one_line_and_exit_2_before_anything_starts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "factory.stage", "pretrain", "--config",
                           str(ROOT / "configs" / "tanuki-8b.yaml"), "runtime.precision=fp8", "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: {ROOT / 'configs' / 'tanuki-8b.yaml'}: runtime.precision=fp8: needs Transformer Engine and "
        "transformer_engine is not importable here; install it, or set runtime.transformer_engine=required to plan "
        "for the GPU nodes' copy"]


@pytest.mark.parametrize("caps, line", [
    (H100, "runtime.precision=fp8: needs Transformer Engine layers; this process builds none (NVIDIA H100 80GB HBM3 "
           "(sm_90), no Transformer Engine, no Apex fused wgrad)"),
    (dataclasses.replace(H100_TE, device_name="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0)),
     "runtime.precision=fp8: NVIDIA A100-SXM4-80GB has no FP8 tensor cores (compute capability 8.9 or newer: Ada, "
     "Hopper, Blackwell)"),
])
def test_the_runtime_refuses_fp8_where_the_process_cannot_run_it(caps, line):
    from factory.runtime.config import RuntimeConfig
    from factory.runtime.runtime import check_fp8

    with pytest.raises(ConfigError) as err:
        check_fp8(RuntimeConfig(device="cuda", precision="fp8"), caps)
    assert err.value.problems == [line]
    check_fp8(RuntimeConfig(device="cuda", precision="fp8"), H100_TE)  # Hopper with TE: accepted


def test_fp8_gemm_dimensions_that_are_not_multiples_of_16_are_one_line_each():
    runtime = {"device": "cuda", "precision": "fp8", "transformer_engine": "required", "fp8": {"bf16_layers": 0}}
    problems = _problems(runtime=runtime, parallel={"tensor": 2}, model={"ffn_hidden_size": 136, "seq_length": 40})
    assert problems == [
        "<config>: model.ffn_hidden_size=136: runtime.precision=fp8 needs GEMM dimensions in multiples of 16 (per "
        "tensor-parallel shard); this gives 68",
        "<config>: model.seq_length=40: runtime.precision=fp8 needs GEMM dimensions in multiples of 16 (per "
        "tensor-parallel shard); this gives 40"]


def test_an_fp32_run_leaves_the_fused_cross_entropy_off():
    assert "cross-entropy (an fp32 run: Megatron's fused kernel returns bf16 logit gradients)" in \
        decide(H100, DENSE, ParallelConfig(), "fp32", None).describe_fusions()


FUSION_FIELDS = {"swiglu": "bias_activation_fusion", "bias-dropout-add": "bias_dropout_fusion",
                 "cross-entropy": "cross_entropy_loss_fusion"}


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile's CPU backend needs a C++ compiler")
def test_megatrons_own_fused_kernels_compute_what_the_unfused_layers_do(runtime, monkeypatch):
    """The kernels a CUDA run turns on without TE or Apex are torch.compile'd, so they run here too, on this
    project's model: fused SwiGLU and bias-dropout-add give the unfused loss and gradients; the fused cross-entropy
    the same loss with its gradients rounded to bf16 (why an fp32 run leaves it off)."""
    import torch

    from factory.model import build

    model_cfg = make_config(TINY_DENSE).model
    tokens = torch.randint(0, 250, (2, 32), generator=torch.Generator().manual_seed(1))

    def loss_and_grads(model):
        loss = model(tokens, torch.arange(32).expand(2, 32), None, labels=tokens)
        loss.sum().backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    plain = build.build_gpt_model(model_cfg, runtime)
    loss, grads = loss_and_grads(plain)
    cpu_decision = build.decide_for
    worst = {}
    for names in (("swiglu", "bias-dropout-add"), ("cross-entropy",)):
        def with_fusions(model, rt, execution=Execution(), names=names):
            decision = cpu_decision(model, rt, execution)
            return dataclasses.replace(decision, fusions=tuple(dataclasses.replace(f, on=f.on or f.name in names)
                                                               for f in decision.fusions))
        monkeypatch.setattr(build, "decide_for", with_fusions)
        fused = build.build_gpt_model(model_cfg, runtime)
        assert all(getattr(fused.config, FUSION_FIELDS[name]) for name in names)
        fused.load_state_dict(plain.state_dict())
        fused_loss, fused_grads = loss_and_grads(fused)
        assert torch.allclose(fused_loss, loss, atol=1e-6)
        worst[names[-1]] = max(((fused_grads[n] - g).abs().max() / g.abs().max()).item() for n, g in grads.items())
    assert worst["bias-dropout-add"] <= 1e-5
    assert 1e-5 < worst["cross-entropy"] <= 2**-8  # bf16 rounding, not an error
