"""Model config -> megatron.core TransformerConfig, layer spec and GPTModel (Llama-style, dense or MoE).

Every TransformerConfig field is decided here, before the model is built: Megatron's submodules copy
config fields when they are constructed (the MoE router copies `calculate_per_token_loss`), so a field
patched on `model.config` afterwards reaches some modules and not others. What the model computes comes
from the ModelConfig and the parallel layout; how it runs (precision, fusions, FP8, the experts' kernel, attention
backend, recomputation, loss convention) from one decision made on the runtime's capabilities
(factory/model/execution.py), which the training setup and the memory plan read too.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from factory.model.config import ModelConfig
from factory.model.execution import RECOMPUTE_FIELDS, Decision, Execution, decide_for

if TYPE_CHECKING:  # for annotations only
    from factory.runtime.runtime import Runtime

log = logging.getLogger(__name__)


def execution_fields(decision: Decision, runtime: Runtime, execution: Execution) -> dict:
    """The TransformerConfig fields that say how the model runs rather than what it computes: the runtime's
    dtypes, attention backend and determinism, the decision's fusions and FP8 recipe (factory/model/execution.py,
    made from the runtime's capabilities), and the driver's recomputation and loss convention."""
    return {**runtime.transformer_config_overrides(), **decision.fields(), **RECOMPUTE_FIELDS[execution.recompute],
            "calculate_per_token_loss": execution.per_token_loss}


def transformer_config(model: ModelConfig, runtime: Runtime, execution: Execution = Execution(),
                       decision: Decision | None = None):
    """The TransformerConfig for `model` under `runtime` (parallel layout, dtype, device flags), run as
    `execution` says (and as `decision` decided, made here when not given)."""
    import torch.nn.functional as F
    from megatron.core.transformer import TransformerConfig

    decision = decision or decide_for(model, runtime, execution)
    p = runtime.parallel
    fields = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.query_groups,
        kv_channels=model.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        qk_layernorm=model.qk_layernorm,
        init_method_std=model.init_method_std,
        attention_dropout=model.attention_dropout,
        hidden_dropout=model.hidden_dropout,
        tensor_model_parallel_size=p.tensor,
        pipeline_model_parallel_size=p.pipeline,
        context_parallel_size=p.context,
        expert_model_parallel_size=p.expert,
        expert_tensor_parallel_size=p.expert_tensor_size,
        sequence_parallel=p.sequence_parallel,
        pipeline_dtype=runtime.dtype,
    )
    if model.moe is not None:
        m = model.moe
        fields.update(
            num_moe_experts=m.num_experts,
            moe_router_topk=m.router_topk,
            moe_ffn_hidden_size=m.ffn_hidden_size or model.ffn_hidden_size,
            moe_router_score_function=m.router_score_function,
            moe_router_pre_softmax=m.router_pre_softmax,
            moe_router_topk_scaling_factor=m.router_topk_scaling_factor,
            moe_router_load_balancing_type=m.load_balancing_type,
            moe_aux_loss_coeff=m.aux_loss_coeff,
            moe_z_loss_coeff=m.z_loss_coeff,
            moe_token_dispatcher_type=m.token_dispatcher,
            moe_shared_expert_intermediate_size=m.shared_expert_ffn_hidden_size,
            moe_shared_expert_gate=m.shared_expert_gate,
            moe_grouped_gemm=decision.grouped_gemm,
            moe_router_dtype="fp32",
        )
    fields.update(execution_fields(decision, runtime, execution))
    return TransformerConfig(**fields)


def layer_spec(model: ModelConfig, runtime: Runtime, grouped: bool = False):
    """Transformer Engine spec when the runtime has TE; otherwise Megatron's local spec, with its
    core attention swapped for `SdpaAttention` unless model.attention=local, storing its weights under
    the keys the TE spec stores them under (`te_checkpoint_keys`). `grouped`: the experts as one grouped GEMM
    (the decision's `grouped_gemm`)."""
    from megatron.core.models.gpt import gpt_layer_specs as specs

    num_experts = model.moe.num_experts if model.moe else None
    if runtime.use_transformer_engine:
        return specs.get_gpt_layer_with_transformer_engine_spec(
            num_experts=num_experts, moe_grouped_gemm=grouped, qk_layernorm=model.qk_layernorm)
    spec = specs.get_gpt_layer_local_spec(
        num_experts=num_experts, moe_grouped_gemm=grouped, qk_layernorm=model.qk_layernorm,
        normalization="RMSNorm")
    spec.submodules.sharded_state_dict_keys_map = te_checkpoint_keys(moe=model.moe is not None)
    if model.attention == "sdpa":
        from factory.model.attention import SdpaAttention

        spec.submodules.self_attention.submodules.core_attention = SdpaAttention
    return spec


def te_checkpoint_keys(moe: bool) -> dict[str, str]:
    """The local layer's checkpoint keys map onto Transformer Engine's layout, the one Megatron-LM GPU runs write.

    TE fuses a norm into the linear that follows it (TELayerNormColumnParallelLinear), so it stores the input
    norm as `self_attention.linear_qkv.layer_norm_weight` and a dense layer's pre-MLP norm as
    `mlp.linear_fc1.layer_norm_weight`; an MoE layer's router and experts take no fused norm, so TE keeps
    `pre_mlp_layernorm.weight` there. Megatron's local spec maps the pre-MLP norm to the fused key in MoE
    layers too, which a TE model cannot load (checkpoints written that way still load: factory/train/
    checkpoint_keys.py)."""
    keys = {"input_layernorm.": "self_attention.linear_qkv.layer_norm_"}
    return keys if moe else {**keys, "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"}


def build_gpt_model(model: ModelConfig, runtime: Runtime, pre_process: bool | None = None,
                    post_process: bool | None = None, meta: bool = False, execution: Execution = Execution()):
    """A megatron.core GPTModel for this pipeline stage, on the runtime's device; with `meta`, on
    torch's meta device (shapes only, no memory: the sharded state dict of a model too big to hold)."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    runtime.check_model(model)
    decision = decide_for(model, runtime, execution)
    for warning in decision.warnings:
        log.warning(warning)
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage()
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage()
    with torch.device("meta") if meta else contextlib.nullcontext():
        gpt = GPTModel(
            config=transformer_config(model, runtime, execution, decision),
            transformer_layer_spec=layer_spec(model, runtime, decision.grouped_gemm),
            vocab_size=model.padded_vocab_size(runtime.parallel.tensor),
            max_sequence_length=model.max_position_embeddings or model.seq_length,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
            position_embedding_type="rope",
            rotary_percent=1.0,
            rotary_base=model.rotary_base,
        )
    return gpt if meta else gpt.to(runtime.device)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of the unsharded model (vocab padded for TP=1)."""

    total: int
    active: int
    embedding: int

    def describe(self) -> str:
        return (f"{self.total / 1e6:,.2f}M total, {self.active / 1e6:,.2f}M active per token, "
                f"{self.embedding / 1e6:,.2f}M in embeddings/output")


def parameter_counts(model: ModelConfig, tensor_parallel: int = 1) -> ParameterCounts:
    """Closed-form parameter counts (checked against GPTModel in tests); no torch needed."""
    h, hd = model.hidden_size, model.head_dim
    attention = h * hd * (2 * model.num_attention_heads + 2 * model.query_groups)
    norms = 2 * h + (2 * hd if model.qk_layernorm else 0)
    vocab = model.padded_vocab_size(tensor_parallel)
    embedding = vocab * h * (2 if model.untie_embeddings_and_output_weights else 1)
    if model.moe is None:
        ffn_total = ffn_active = 3 * h * model.ffn_hidden_size
    else:
        m = model.moe
        expert = 3 * h * (m.ffn_hidden_size or model.ffn_hidden_size)
        shared = 3 * h * (m.shared_expert_ffn_hidden_size or 0) + (h if m.shared_expert_gate else 0)
        router = h * m.num_experts
        ffn_total = router + shared + m.num_experts * expert
        ffn_active = router + shared + m.router_topk * expert
    per_layer = attention + norms
    total = embedding + h + model.num_layers * (per_layer + ffn_total)
    active = embedding + h + model.num_layers * (per_layer + ffn_active)
    return ParameterCounts(total=total, active=active, embedding=embedding)
