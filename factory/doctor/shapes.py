"""The two tiers' shapes: the same checks run tiny fp32 models on CPU and ~100M bf16 models on one GPU."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shapes:
    device: str
    precision: str
    model: dict
    """Dense model keys (the `model:` section without vocab_size, which the doctor's tokenizer sets)."""
    moe: dict
    train_iters: int
    """Steps of the straight run; the resumed run stops at half of them and continues."""
    global_batch_size: int
    micro_batch_size: int
    vocab_size: int
    documents: int
    resume_tolerance: float
    """Largest |loss difference| allowed between the straight and the resumed run."""
    logit_tolerance: float
    """fp32 max |dlogits| for upcycle and export."""
    deterministic: bool = False
    distributed_optimizer: bool = False
    export_dtypes: tuple[str, ...] = ("float32",)
    runtime_extra: dict = field(default_factory=dict)

    def runtime(self) -> dict:
        return {"device": self.device, "precision": self.precision, "seed": 1234,
                "deterministic": self.deterministic, **self.runtime_extra}


CPU = Shapes(
    device="cpu", precision="fp32",
    model={"num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
           "num_query_groups": 2, "seq_length": 32},
    moe={"num_experts": 4, "router_topk": 2, "token_dispatcher": "allgather"},
    train_iters=6, global_batch_size=4, micro_batch_size=2, vocab_size=512, documents=300,
    resume_tolerance=0.0, logit_tolerance=1e-5)

# 76M parameters at 512 pieces (the doctor's own corpus supports a BPE vocabulary of at most ~780); bf16 resume
# is compared with deterministic kernels on, so the curves should match exactly; the tolerance covers
# reduction-order differences of bf16 (docs/gpu.md).
GPU = Shapes(
    device="cuda", precision="bf16",
    model={"num_layers": 12, "hidden_size": 768, "ffn_hidden_size": 2048, "num_attention_heads": 12,
           "num_query_groups": 4, "seq_length": 1024},
    moe={"num_experts": 8, "router_topk": 2, "token_dispatcher": "alltoall", "grouped_gemm": True},
    train_iters=200, global_batch_size=16, micro_batch_size=8, vocab_size=512, documents=4000,
    resume_tolerance=1e-3, logit_tolerance=1e-4, deterministic=True, distributed_optimizer=True,
    export_dtypes=("float32", "bfloat16"))
