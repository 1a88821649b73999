"""The doctor's tiers: which checks run, in order, with which shapes and time budgets."""

from __future__ import annotations

from factory.doctor import build_checks, chain_checks, parallel_check, performance_checks
from factory.doctor.checks import Check
from factory.doctor.shapes import CPU, GPU

# (name, what a pass proves, the check, the checks it builds on, the processes it needs)
CHECKS = [
    ("runtime", "the runtime sets up the process group and Megatron parallel state", build_checks.runtime_init, (), 1),
    ("dense_model", "a dense GPTModel builds with the counted parameters and trains a step", build_checks.dense_model,
     (), 1),
    ("moe_model", "an MoE GPTModel builds with the counted parameters and trains a step (the modules that ran named)",
     build_checks.moe_model, (), 1),
    ("precision_agreement", "bf16 training follows fp32 from the same weights on the same tokens",
     performance_checks.precision_agreement, (), 1),
    ("dense_mfu", "a ~1B dense Llama-shape model trains at the stated tokens/s, TFLOP/s and MFU",
     performance_checks.dense_mfu, (), 1),
    ("moe_step_ratio", "an 8-expert top-2 MoE steps within the stated factor of the dense model with its active "
     "parameters", performance_checks.moe_step_ratio, (), 1),
    ("moe_kernels", "alltoall and allgather dispatch, grouped and per-expert GEMMs give the same logits; the modules "
     "that ran are named", performance_checks.moe_kernels, (), 1),
    ("data", "the tokenizer and pack stages make a tokenizer and a packed blend offline", chain_checks.data, (), 1),
    ("pretrain_resume", "pretrain saves and resumes onto the uninterrupted loss curve", chain_checks.pretrain_resume,
     ("data",), 1),
    ("upcycle", "the upcycled MoE equals the dense model at step 0", chain_checks.upcycle, ("pretrain_resume",), 1),
    ("export", "the exported HF folder gives the checkpoint's logits under stock transformers", chain_checks.export,
     ("upcycle",), 1),
    ("memory_plan", "each training check's peak GPU memory is within the stated band of the memory plan",
     performance_checks.memory_plan, (), 1),
    ("tensor_expert_parallel", "TP=2 (dense) and EP=2 (MoE) over 2 processes give the TP=1/EP=1 logits",
     parallel_check.tensor_expert_parallel, (), 2),
    ("resume_other_layout", "a run saved at DP=2 resumes at TP=2 onto its uninterrupted loss curve (the distributed "
     "optimizer's state resharded on GPUs)", parallel_check.resume_other_layout, ("data",), 2),
]
GPU_MINUTES = {
    "runtime": 0.25, "dense_model": 0.25, "moe_model": 0.5, "precision_agreement": 0.75, "dense_mfu": 1.25,
    "moe_step_ratio": 1.0, "moe_kernels": 0.5, "data": 0.25, "pretrain_resume": 1.5, "upcycle": 0.5, "export": 0.75,
    "memory_plan": 0.1, "tensor_expert_parallel": 1.0, "resume_other_layout": 1.5}
"""Minutes each check may take on one H100/H200 (first guesses: the GPU tier has not run yet, docs/gpu.md). The
one-GPU checks add up to 7.6 minutes, inside `scripts/device_check.sh`'s 8.5-minute doctor budget."""
CPU_MINUTES = {name: 1.0 for name, *_ in CHECKS}
"""The CPU tier on a 2-core machine: each check well under a minute (docs/benchmarks.md, Doctor)."""


def checks(minutes: dict[str, float]) -> list[Check]:
    return [Check(name, proves, run, requires, minutes[name], devices)
            for name, proves, run, requires, devices in CHECKS]


TIERS = {"cpu": (CPU, checks(CPU_MINUTES)), "gpu": (GPU, checks(GPU_MINUTES))}
