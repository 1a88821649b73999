"""Model shape config: Llama-style dense transformers and their Mixture-of-Experts variants."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from factory.schema import Section, rule


class MoEConfig(Section):
    """Mixture-of-Experts FFN settings (Megatron-Core MoE layer)."""

    num_experts: int = Field(ge=2)
    """Routed experts per MoE layer."""
    router_topk: int = Field(default=2, ge=1)
    """Experts each token is sent to."""
    ffn_hidden_size: int | None = Field(default=None, ge=1)
    """Intermediate size of one routed expert; defaults to model.ffn_hidden_size."""
    router_score_function: Literal["softmax", "sigmoid"] = "softmax"
    """How router logits become scores."""
    router_pre_softmax: bool = False
    """Softmax over all experts before top-k (True) or over the chosen top-k logits (False, Mixtral)."""
    router_topk_scaling_factor: float | None = None
    """Multiplier on the top-k routing weights (used by granular upcycling)."""
    load_balancing_type: Literal["aux_loss", "seq_aux_loss", "none"] = "aux_loss"
    """Router load-balancing loss."""
    aux_loss_coeff: float = Field(default=1e-2, ge=0)
    """Weight of the load-balancing loss."""
    z_loss_coeff: float | None = Field(default=None, ge=0)
    """Weight of the router z-loss; None disables it."""
    token_dispatcher: Literal["allgather", "alltoall"] = "alltoall"
    """Token dispatcher; alltoall needs CUDA, allgather runs everywhere."""
    shared_expert_ffn_hidden_size: int | None = Field(default=None, ge=1)
    """Total intermediate size of the shared expert(s) next to the routed ones; None for none."""
    shared_expert_gate: bool = False
    """Sigmoid gate on the shared expert output (Qwen2-MoE)."""
    grouped_gemm: bool = False
    """Batched expert GEMMs (TEGroupedMLP); needs Transformer Engine."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, self.router_topk <= self.num_experts, f"{prefix}.router_topk", self.router_topk,
             f"must be <= num_experts ({self.num_experts})")
        rule(out, not self.shared_expert_gate or self.shared_expert_ffn_hidden_size is not None,
             f"{prefix}.shared_expert_gate", self.shared_expert_gate,
             "needs shared_expert_ffn_hidden_size to be set")
        return out


class ModelConfig(Section):
    """A Llama-style decoder: RMSNorm, SwiGLU, RoPE, GQA, untied embeddings, no biases."""

    num_layers: int = Field(ge=1)
    """Transformer layers."""
    hidden_size: int = Field(ge=1)
    """Model width."""
    ffn_hidden_size: int = Field(ge=1)
    """SwiGLU intermediate size of the dense FFN."""
    num_attention_heads: int = Field(ge=1)
    """Query heads."""
    num_query_groups: int | None = Field(default=None, ge=1)
    """Key/value heads (GQA); None means one per query head."""
    kv_channels: int | None = Field(default=None, ge=1)
    """Head dimension; defaults to hidden_size / num_attention_heads."""
    seq_length: int = Field(ge=1)
    """Training sequence length."""
    max_position_embeddings: int | None = Field(default=None, ge=1)
    """Longest position RoPE is set up for; defaults to seq_length."""
    vocab_size: int = Field(ge=1)
    """Tokenizer vocabulary size (before padding)."""
    make_vocab_size_divisible_by: int = Field(default=128, ge=1)
    """The embedding is padded to a multiple of this times the tensor-parallel size."""
    rotary_base: float = Field(default=10000.0, gt=0)
    """RoPE theta."""
    norm_epsilon: float = Field(default=1e-5, gt=0)
    """RMSNorm epsilon."""
    init_method_std: float = Field(default=0.02, gt=0)
    """Std of the normal weight init."""
    untie_embeddings_and_output_weights: bool = True
    """Separate input embedding and output layer (Llama)."""
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on attention probabilities."""
    hidden_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on residual branches."""
    qk_layernorm: bool = False
    """RMSNorm on each head's query and key before RoPE (Qwen3); off for Llama/Tanuki."""
    attention: Literal["sdpa", "local"] = "sdpa"
    """Core attention without Transformer Engine: sdpa (torch flash/memory-efficient kernels) or
    local (Megatron's DotProductAttention, materializes s x s scores); ignored when TE is used."""
    moe: MoEConfig | None = None
    """Mixture-of-Experts settings; None for a dense model."""

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    def padded_vocab_size(self, tensor_parallel: int = 1) -> int:
        """Vocab rounded up to a multiple of make_vocab_size_divisible_by x TP (Megatron's rule)."""
        multiple = self.make_vocab_size_divisible_by * tensor_parallel
        return -(-self.vocab_size // multiple) * multiple

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        heads, groups = self.num_attention_heads, self.query_groups
        rule(out, self.kv_channels is not None or self.hidden_size % heads == 0,
             f"{prefix}.num_attention_heads", heads,
             f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads")
        rule(out, heads % groups == 0, f"{prefix}.num_query_groups", groups,
             f"num_attention_heads ({heads}) must be divisible by num_query_groups")
        if self.kv_channels is not None or self.hidden_size % heads == 0:
            rule(out, self.head_dim % 2 == 0, f"{prefix}.kv_channels", self.head_dim,
                 "the head dimension must be even for RoPE")
        max_pos = self.max_position_embeddings or self.seq_length
        rule(out, self.seq_length <= max_pos, f"{prefix}.seq_length", self.seq_length,
             f"must be <= max_position_embeddings ({max_pos})")
        if self.moe is not None:
            out += self.moe.problems(f"{prefix}.moe")
        return out
