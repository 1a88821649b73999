"""Core attention on torch's scaled_dot_product_attention: the fast path when Transformer Engine is absent.

`SdpaAttention` is a drop-in for megatron-core 0.19.2's `DotProductAttention` (same constructor and
forward signatures) that never materializes the s x s score matrix on GPU: SDPA dispatches to the
flash or memory-efficient kernel. It computes the same function as `DotProductAttention` for what it
supports and raises `NotImplementedError` for the rest (packed/THD sequences, context parallelism,
attention bias, sliding windows, non-vanilla softmax), instead of computing something different.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.utils import is_layer_window_attention
from megatron.core.utils import divide

if TYPE_CHECKING:  # for annotations only
    from megatron.core.packed_seq_params import PackedSeqParams

# Mask types that need no mask tensor, or use the one given (True = masked, as in Megatron).
_SUPPORTED_MASKS = (AttnMaskType.causal, AttnMaskType.no_mask, AttnMaskType.padding,
                    AttnMaskType.arbitrary)


class SdpaAttention(MegatronModule):
    """Softmax(q k^T * scale + mask) v per tensor-parallel partition, via F.scaled_dot_product_attention."""

    def __init__(self, config, layer_number: int, attn_mask_type: AttnMaskType, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: ProcessGroupCollection | None = None):
        super().__init__(config=config)
        _reject(config.context_parallel_size != 1,
                f"context_parallel_size={config.context_parallel_size}")
        _reject(is_layer_window_attention(config.window_size, config.window_attn_skip_freq,
                                          layer_number), "sliding-window attention")
        _reject(config.softmax_type != "vanilla", f"softmax_type={config.softmax_type!r}")
        _reject(attn_mask_type not in _SUPPORTED_MASKS, f"attn_mask_type={attn_mask_type.name}")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        self.pg_collection, self.tp_group = pg_collection, pg_collection.tp
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.attention_type = attention_type
        tp = self.tp_group.size()
        self.num_attention_heads_per_partition = divide(config.num_attention_heads, tp)
        self.num_query_groups_per_partition = divide(config.num_query_groups, tp)
        self.hidden_size_per_partition = divide(config.kv_channels * config.num_attention_heads, tp)
        # apply_query_key_layer_scaling divides then re-multiplies by layer_number in Megatron: no-op here.
        if softmax_scale is None:
            softmax_scale = config.softmax_scale
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                attn_mask_type: AttnMaskType | None = None, attention_bias: torch.Tensor | None = None,
                packed_seq_params: PackedSeqParams | None = None) -> torch.Tensor:
        """q [sq, b, np, hn], k/v [sk, b, ng, hn], mask None or bool [b or 1, 1 or np, sq, sk]
        (True = masked) -> [sq, b, np * hn]."""
        _reject(packed_seq_params is not None, "packed_seq_params (packed / THD sequences)")
        _reject(attention_bias is not None, "attention_bias")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        _reject(mask_type not in _SUPPORTED_MASKS, f"attn_mask_type={mask_type.name}")
        sq, sk = query.size(0), key.size(0)
        # Like Megatron: an explicit mask replaces the causal one; causal with one query needs none.
        is_causal = attention_mask is None and mask_type == AttnMaskType.causal and sq > 1
        _reject(is_causal and sq != sk, f"causal attention with sq={sq} != sk={sk}")
        _reject(attention_mask is None and mask_type in (AttnMaskType.padding, AttnMaskType.arbitrary),
                f"attn_mask_type={mask_type.name} without an attention_mask")
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        mask = None
        if attention_mask is not None:
            _reject(attention_mask.dtype != torch.bool, f"attention_mask of dtype {attention_mask.dtype}")
            # SDPA's bool mask means "may attend". Megatron fills masked scores with -10000, so a
            # fully masked query row gets uniform weights where SDPA would give NaN: such rows see
            # all keys with a zeroed query, which is the same uniform average (and zero q-grad).
            empty = attention_mask.all(dim=-1, keepdim=True)
            q = q.masked_fill(empty, 0.0)
            mask = ~attention_mask | empty
            if groups > 1:  # the kernels that take a mask do not all take enable_gqa
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
                groups = 1
        dropout_p = self.dropout_p if self.training else 0.0
        with self._rng_context(dropout_p):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                 is_causal=is_causal, scale=self.softmax_scale,
                                                 enable_gqa=groups > 1)
        return out.permute(2, 0, 1, 3).reshape(sq, out.size(0), self.hidden_size_per_partition)

    def _rng_context(self, dropout_p: float):
        """Dropout draws from Megatron's model-parallel RNG state, as DotProductAttention's does."""
        if dropout_p > 0 and not self.config.sequence_parallel:
            return tensor_parallel.get_cuda_rng_tracker().fork()
        return contextlib.nullcontext()


def _reject(condition: bool, what: str) -> None:
    if condition:
        raise NotImplementedError(f"SdpaAttention does not support {what}; "
                                  "Transformer Engine's attention (CUDA) does")
