"""The `upcycle:` config section: which dense checkpoint, which MoE, which construction."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from factory.model.config import MoEConfig
from factory.schema import Section, rule
from factory.upcycle.routing import exactness_problem

EXACT_MODES = ("copy", "granular", "shared")


class UpcycleConfig(Section):
    """Dense -> MoE upcycling; attention, norms and embeddings are carried over unchanged."""

    source: Path | None = None
    """Dense checkpoint (root with a tracker file, or an iter_ folder); defaults to
    `<run.dir>/pretrain/checkpoints`. Any TP/PP it was saved with."""
    source_iteration: int | None = Field(default=None, ge=0)
    """Upcycle this saved iteration of the source root instead of its latest (Tanuki upcycled mid-training)."""
    source_tokens: float | None = Field(default=None, gt=0)
    """Upcycle the last saved iteration whose tokens seen are at most this many (e.g. 1.08e12); the plan names
    the iteration and its tokens. Keep that checkpoint with the dense run's `checkpoint.keep_every`."""
    output_dir: Path | None = None
    """Checkpoint root for the MoE checkpoint (iteration 0) and its manifest; defaults to
    `<run.dir>/upcycle/checkpoints`."""
    mode: Literal["copy", "granular", "shared", "drop"] = "copy"
    """copy: every expert is the dense FFN. granular: the FFN split into `granularity` shards, each
    replicated. shared: part of the FFN becomes shared expert(s), the rest routed experts. drop:
    copy/granular, then a fraction of each expert's neurons re-initialized (Drop-Upcycling)."""
    moe: MoEConfig
    """The target MoE layer (experts, top-k, router, shared experts); ffn_hidden_size may be left
    unset and is then derived from the dense FFN, the granularity and the shared part."""
    granularity: int = Field(default=1, ge=1)
    """Shards per dense FFN (G). Experts per full FFN copy = G; needs num_experts and router_topk
    divisible by G. 1 for copy; >= 2 for granular."""
    router_init: Literal["random", "zero"] = "random"
    """Router weights: normal(0, router_std), or all zero (uniform scores)."""
    router_std: float | None = Field(default=None, gt=0)
    """Std of the random router; defaults to the model's init_method_std."""
    drop_fraction: float = Field(default=0.5, ge=0, le=1)
    """drop: share of each expert's intermediate neurons re-initialized (the paper's r; 0.5 there)."""
    noise_std: float = Field(default=0.0, ge=0)
    """Gaussian noise added to every routed expert weight (mergekit-style); 0 disables it. Makes any
    mode inexact: the divergence is reported, not refused."""
    seed: int = 1234
    """Seed for router init, dropped neurons, noise and the probe batch."""
    probe_batch_size: int = Field(default=2, ge=1)
    """Sequences in the verification probe batch (random token ids)."""
    probe_seq_length: int | None = Field(default=None, ge=1)
    """Tokens per probe sequence; defaults to min(model seq_length, 128)."""
    tolerance: float = Field(default=1e-5, gt=0)
    """Largest max |dense logits - MoE logits| accepted for the exact modes (fp32)."""

    @property
    def exact(self) -> bool:
        """Whether this run must reproduce the dense model (and refuses to write otherwise)."""
        return self.mode in EXACT_MODES and self.noise_std == 0

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        m, g = self.moe, self.granularity
        rule(out, self.source_iteration is None or self.source_tokens is None, f"{prefix}.source_tokens",
             self.source_tokens, f"name one of source_iteration ({self.source_iteration}) and source_tokens")
        rule(out, self.mode != "copy" or g == 1, f"{prefix}.granularity", g,
             "mode copy uses whole FFN copies (granularity 1); use mode granular to split the FFN")
        rule(out, self.mode != "granular" or g >= 2, f"{prefix}.granularity", g,
             "mode granular needs granularity >= 2 (granularity 1 is mode copy)")
        rule(out, m.num_experts % g == 0, f"{prefix}.moe.num_experts", m.num_experts,
             f"must be divisible by granularity ({g}): each full FFN copy is {g} experts")
        rule(out, m.router_topk % g == 0, f"{prefix}.moe.router_topk", m.router_topk,
             f"must be a multiple of granularity ({g}) so that whole FFN copies are selected")
        has_shared = m.shared_expert_ffn_hidden_size is not None
        rule(out, self.mode != "shared" or has_shared, f"{prefix}.moe.shared_expert_ffn_hidden_size",
             m.shared_expert_ffn_hidden_size, "mode shared needs a shared expert size")
        rule(out, self.mode == "shared" or not has_shared, f"{prefix}.moe.shared_expert_ffn_hidden_size",
             m.shared_expert_ffn_hidden_size, f"shared experts are built by mode shared, not mode {self.mode}")
        rule(out, m.router_topk > 1 or m.router_score_function != "softmax" or m.router_pre_softmax,
             f"{prefix}.moe.router_pre_softmax", m.router_pre_softmax,
             "Megatron requires softmax-then-top-k with router_topk 1 (exact with router_init: zero)")
        if self.exact:
            reason = exactness_problem(m, g, self.router_init)
            rule(out, reason is None, f"{prefix}.mode", self.mode,
                 f"cannot be exact with this routing: {reason}")
        return out + m.problems(f"{prefix}.moe")
