"""Model FLOPs per trained token, for TFLOP/s and MFU.

    flops/token = 6 * N_matmul + 12 * L * s * (heads * head_dim)

N_matmul counts the weights a token multiplies through: attention projections, the FFN it is routed
through (for MoE: the router, the shared expert and top-k routed experts, i.e. the active
parameters), and the output layer; the input embedding is a lookup and is excluded. The factor 6 is
2 (multiply-add) x 3 (forward, backward w.r.t. activations, backward w.r.t. weights). The second term
is the attention score and value matmuls (2 x 2 x s x d per layer forward, x3 for training), counted
over the full s x s square as in Megatron-LM and PaLM (no causal discount). Recomputation is not
counted: this is model FLOPs, so MFU is comparable across runs and projects.
"""

from __future__ import annotations

from factory.model.build import parameter_counts
from factory.model.config import ModelConfig


def flops_per_token(model: ModelConfig, seq_length: int | None = None) -> float:
    """Training FLOPs per token (forward + backward) of `model` at `seq_length`."""
    counts = parameter_counts(model)
    vocab = model.padded_vocab_size(1)
    input_embedding = vocab * model.hidden_size
    norms = model.hidden_size * (2 * model.num_layers + 1)
    if model.qk_layernorm:
        norms += 2 * model.head_dim * model.num_layers
    matmul_params = counts.active - input_embedding - norms
    if not model.untie_embeddings_and_output_weights:
        matmul_params += input_embedding  # the tied output layer still multiplies
    seq = seq_length or model.seq_length
    attention = 12 * model.num_layers * seq * model.num_attention_heads * model.head_dim
    return 6.0 * matmul_params + attention
