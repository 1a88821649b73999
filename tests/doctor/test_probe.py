"""The doctor's training probes: real steps from given weights, the plan they are measured against, and the
memory records the memory_plan check reads."""

from __future__ import annotations


import pytest

from factory.doctor import configs
from factory.doctor.checks import CheckFailed, CheckSkipped, DoctorContext
from factory.doctor.performance_checks import memory_plan
from factory.doctor.probe import record_memory, stage_plan_bytes, train_probe
from factory.doctor.shapes import CPU
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.train.memory import TrainingShape, plan_memory

MODEL = ModelConfig.model_validate(CPU.ratio_probe.model)


def test_a_probe_started_from_another_probes_weights_follows_its_loss_curve():
    first = train_probe(MODEL, RuntimeConfig(device="cpu", precision="fp32"), CPU.ratio_probe, steps=3,
                        keep_initial=True)
    other_seed = RuntimeConfig(device="cpu", precision="fp32", seed=99)
    again = train_probe(MODEL, other_seed, CPU.ratio_probe, steps=3, initial=first.initial)
    fresh = train_probe(MODEL, other_seed, CPU.ratio_probe, steps=3)
    assert again.losses == pytest.approx(first.losses, abs=1e-6) and fresh.losses != pytest.approx(first.losses)
    assert first.losses[-1] < first.losses[0]  # the fixed batches are being learned
    assert first.peak_bytes is None and first.experts is None and first.initial is not None and again.initial is None
    assert first.decision.describe_fusions().startswith("fusions: none; off: swiglu (CPU run)")


def test_the_probe_plan_is_the_memory_plan_of_its_shape_without_the_cuda_reserve():
    result = train_probe(MODEL, RuntimeConfig(device="cpu", precision="fp32"), CPU.ratio_probe, steps=1)
    shape = TrainingShape(world_size=1, micro_batch_size=2, micro_batches=1, param_bytes=4, distributed_optimizer=False)
    assert result.plan_bytes == plan_memory(MODEL, ParallelConfig(), shape).largest.total


def test_a_stage_is_planned_as_one_process_runs_it(tmp_path):
    cfg = configs.pretrain(CPU, tmp_path, tmp_path / "run", 512, 4, 4, 2)
    shape = TrainingShape(world_size=1, micro_batch_size=2, micro_batches=2, param_bytes=4, distributed_optimizer=False)
    assert stage_plan_bytes(cfg) == plan_memory(cfg.model, cfg.parallel, shape).largest.total


def test_the_memory_plan_check_reads_the_records_and_holds_them_to_the_band(tmp_path):
    context = DoctorContext("gpu", CPU, tmp_path)
    with pytest.raises(CheckSkipped, match="no GPU memory was measured"):
        memory_plan(context)
    assert record_memory(context, "dense_mfu", None, 1.0) == "peak memory not measured on CPU"
    assert record_memory(context, "dense_mfu", 3 * 2**30, 2.5 * 2**30) == "peak 3.00 GiB = 1.20 x plan 2.50"
    assert memory_plan(context) == "measured/planned: dense_mfu 3.00/2.50 GiB = 1.20 (band 0.7-1.25)"
    record_memory(context, "moe", 4 * 2**30, 2 * 2**30)
    with pytest.raises(CheckFailed, match=r"moe 4.00/2.00 GiB = 2.00 .*; outside: moe$"):
        memory_plan(context)
