"""The doctor's tiers: which checks run, in order, with which shapes."""

from __future__ import annotations

from factory.doctor import build_checks, chain_checks, parallel_check
from factory.doctor.checks import Check
from factory.doctor.shapes import CPU, GPU

CHAIN = [
    Check("runtime", "the runtime sets up the process group and Megatron parallel state", build_checks.runtime_init),
    Check("dense_model", "a dense GPTModel builds with the counted parameters and trains a step",
          build_checks.dense_model),
    Check("moe_model", "an MoE GPTModel builds with the counted parameters and trains a step",
          build_checks.moe_model),
    Check("data", "the tokenizer and pack stages make a tokenizer and a packed blend offline", chain_checks.data),
    Check("pretrain_resume", "pretrain saves and resumes onto the uninterrupted loss curve",
          chain_checks.pretrain_resume, requires=("data",)),
    Check("upcycle", "the upcycled MoE equals the dense model at step 0", chain_checks.upcycle,
          requires=("pretrain_resume",)),
    Check("export", "the exported HF folder gives the checkpoint's logits under stock transformers",
          chain_checks.export, requires=("upcycle",)),
    Check("tensor_expert_parallel", "TP=2 (dense) and EP=2 (MoE) over 2 processes give the TP=1/EP=1 logits",
          parallel_check.tensor_expert_parallel),
]
TIERS = {"cpu": (CPU, CHAIN), "gpu": (GPU, CHAIN)}
