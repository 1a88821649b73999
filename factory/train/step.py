"""The forward step handed to Megatron's forward-backward schedules, with LM loss and z-loss.

Losses are per-token sums (`calculate_per_token_loss`): the schedule adds the token counts of all
micro-batches and `finalize_model_grads` divides the gradients by the global count, so any
micro-batch / data-parallel split gives the same update.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:  # for annotations only
    from megatron.core.distributed import DistributedDataParallel

ModelOutput = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""What the forward step's model call gives: per-token LM losses (the hidden states before the last pipeline
stage), with their logsumexp when z-loss is on."""


def logsumexp_vocab_parallel(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over a vocabulary split across tensor-parallel ranks (differentiable)."""
    from megatron.core import parallel_state, tensor_parallel

    local_max = logits.max(dim=-1).values.detach()
    torch.distributed.all_reduce(local_max, op=torch.distributed.ReduceOp.MAX,
                                 group=parallel_state.get_tensor_model_parallel_group())
    sum_exp = torch.exp(logits - local_max.unsqueeze(-1)).sum(dim=-1)
    return local_max + torch.log(tensor_parallel.reduce_from_tensor_model_parallel_region(sum_exp))


def loss_func(loss_mask: torch.Tensor, z_loss_coeff: float,
              output: ModelOutput) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss sum, token count, logged sums) from per-token LM losses (and logsumexp for z-loss)."""
    token_loss, lse = output if isinstance(output, tuple) else (output, None)
    mask = loss_mask.float()
    lm = (token_loss.float() * mask).sum()
    tokens = mask.sum()
    logged = {"lm loss": torch.stack([lm.detach(), tokens.detach()])}
    total = lm
    if lse is not None:
        z = (lse.float().pow(2) * mask).sum()
        total = lm + z_loss_coeff * z
        logged["z loss"] = torch.stack([z.detach(), tokens.detach()])
    return total, tokens.to(torch.int), logged


def make_forward_step(z_loss_coeff: float, device: torch.device):
    """A `forward_step_func(data_iterator, model)` for megatron.core schedules."""

    def forward_step(data_iterator: Iterator[dict[str, torch.Tensor]],
                     model: DistributedDataParallel) -> tuple[ModelOutput, partial]:
        from megatron.core import parallel_state, tensor_parallel

        batch = {k: v.to(device, non_blocking=True) for k, v in next(data_iterator).items()}
        if z_loss_coeff == 0 or not parallel_state.is_pipeline_last_stage():
            out = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        else:
            logits = model(batch["tokens"], batch["position_ids"], None).float()  # [b, s, v/tp]
            token_loss = tensor_parallel.vocab_parallel_cross_entropy(
                logits.transpose(0, 1).contiguous(), batch["labels"].transpose(0, 1).contiguous())
            out = (token_loss.transpose(0, 1), logsumexp_vocab_parallel(logits))
        return out, partial(loss_func, batch["loss_mask"], z_loss_coeff)

    return forward_step
