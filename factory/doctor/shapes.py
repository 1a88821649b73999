"""The two tiers' shapes: the same checks run tiny fp32 models on CPU and ~100M-1B bf16 models on one GPU."""

from __future__ import annotations

from dataclasses import dataclass, field

BF16_LOGIT_TOLERANCE = 0.1
"""max |dlogits| between two bf16 computations of the same model in another order (logits of order 1, 8 mantissa
bits, errors compounding over the layers): a TP=2 split, a bf16 HF model against the bf16 Megatron model."""


@dataclass(frozen=True)
class Probe:
    """A model the performance checks train on synthetic tokens: its shape, batch and step counts."""

    model: dict
    """Model keys, vocab_size included (the probes need no tokenizer)."""
    micro_batch_size: int
    micro_batches: int
    warmup_steps: int
    """Steps before timing starts (kernel selection, compilation of Megatron's fused kernels)."""
    timed_steps: int

    @property
    def tokens_per_step(self) -> int:
        return self.model["seq_length"] * self.micro_batch_size * self.micro_batches


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
    layout_resume_tolerance: float
    """The same, when the run resumes at another parallel layout (another reduction order)."""
    logit_tolerance: float
    """fp32 max |dlogits| for upcycle, export and the kernel comparisons."""
    mfu_probe: Probe
    """The dense model whose step time gives tokens/s, TFLOP/s and MFU."""
    ratio_probe: Probe
    """The dense model the MoE step time is compared with (its MoE twin: experts of half the FFN, top-2)."""
    precision_steps: int = 20
    """Steps of the bf16-against-fp32 loss comparison (on `model`)."""
    precision_tolerance: float = 0.03
    """Largest relative loss difference between the bf16 and the fp32 run at any of those steps."""
    moe_ratio_limit: float | None = 4.0
    """Largest MoE / dense step-time ratio at equal active parameters a node may show; None: reported, not bounded
    (the CPU tier's tiny models time overheads, and tests assert behaviour, not wall time)."""
    mfu_floor: float = 0.2
    """Smallest MFU of the dense probe a GPU node may show (where the GPU's peak is known)."""
    memory_band: tuple[float, float] = (0.7, 1.25)
    """Measured peak / planned memory each training check must fall in (CUDA only)."""
    deterministic: bool = False
    distributed_optimizer: bool = False
    export_dtypes: tuple[str, ...] = ("float32",)
    runtime_extra: dict = field(default_factory=dict)

    def runtime(self, precision: str | None = None) -> dict:
        return {"device": self.device, "precision": precision or self.precision, "seed": 1234,
                "deterministic": self.deterministic, **self.runtime_extra}

    def logit_tolerance_for(self, precision: str) -> float:
        """max |dlogits| allowed between two computations of the same model in `precision`."""
        return BF16_LOGIT_TOLERANCE if precision == "bf16" else self.logit_tolerance


def _probe(layers: int, hidden: int, ffn: int, heads: int, groups: int, seq: int, vocab: int, micro: int,
           micros: int, warmup: int, timed: int) -> Probe:
    return Probe({"num_layers": layers, "hidden_size": hidden, "ffn_hidden_size": ffn, "num_attention_heads": heads,
                  "num_query_groups": groups, "seq_length": seq, "vocab_size": vocab}, micro, micros, warmup, timed)


CPU = Shapes(
    device="cpu", precision="fp32",
    model={"num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
           "num_query_groups": 2, "seq_length": 32},
    moe={"num_experts": 4, "router_topk": 2, "token_dispatcher": "allgather"},
    train_iters=6, global_batch_size=4, micro_batch_size=2, vocab_size=512, documents=300,
    resume_tolerance=0.0, layout_resume_tolerance=1e-4, logit_tolerance=1e-5,
    mfu_probe=_probe(2, 64, 176, 4, 2, 64, 512, 2, 2, 1, 2),
    ratio_probe=_probe(2, 64, 128, 4, 2, 64, 512, 2, 1, 1, 2),
    precision_steps=6, moe_ratio_limit=None)

# 76M parameters at 512 pieces (the doctor's own corpus supports a BPE vocabulary of at most ~780); bf16 resume
# is compared with deterministic kernels on (CUBLAS_WORKSPACE_CONFIG, Megatron's and TE's deterministic modes),
# so the curves should match; the tolerance covers reduction-order differences of bf16 (docs/gpu.md). The MFU
# probe has TinyLlama-1.1B's width (hidden 2048, FFN 5632, 32 heads, 4 KV groups) with 20 of its 22 layers: 1.01B
# parameters at a 32k vocabulary; the ratio probe is a 0.19B dense model and its 8-expert top-2 twin with the same
# active parameters.
GPU = Shapes(
    device="cuda", precision="bf16",
    model={"num_layers": 12, "hidden_size": 768, "ffn_hidden_size": 2048, "num_attention_heads": 12,
           "num_query_groups": 4, "seq_length": 1024},
    moe={"num_experts": 8, "router_topk": 2, "token_dispatcher": "alltoall", "grouped_gemm": True},
    train_iters=100, global_batch_size=16, micro_batch_size=8, vocab_size=512, documents=4000,
    resume_tolerance=1e-3, layout_resume_tolerance=2e-2, logit_tolerance=1e-4,
    mfu_probe=_probe(20, 2048, 5632, 32, 4, 2048, 32000, 4, 2, 3, 8),
    ratio_probe=_probe(8, 1024, 4096, 16, 4, 2048, 32000, 4, 1, 3, 6),
    deterministic=True, distributed_optimizer=True, export_dtypes=("float32", "bfloat16"))
