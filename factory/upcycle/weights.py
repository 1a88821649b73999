"""The MoE checkpoint's tensors, made one at a time from a dense checkpoint, and the layer-by-layer probe.

Nothing here holds a whole model: `MoeProducer` reads the one dense tensor each MoE tensor is cut
from (keeping the last one read), and `compare` runs both models through `LayerStream`, one layer in
memory at a time, reading the MoE model back from the checkpoint just written.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import torch

from factory.model.layer_stream import LayerStream
from factory.train.checkpoint_stream import CheckpointReader
from factory.upcycle.target import ExpertPlan
from factory.upcycle.transform import mlp_tensor

if TYPE_CHECKING:  # for annotations only
    from megatron.core.models.gpt import GPTModel

    from factory.runtime.runtime import Runtime

log = logging.getLogger(__name__)
_MLP = re.compile(r"^decoder\.layers\.(\d+)\.mlp\.(.+)$")


class MoeProducer:
    """name (an MoE state-dict key) -> tensor: FFN-derived tensors from `mlp_tensor`, the rest
    (attention, norms, embeddings) read unchanged from the dense checkpoint."""

    def __init__(self, dense: CheckpointReader, plan: ExpertPlan, seed: int):
        self.dense, self.plan, self.seed = dense, plan, seed
        self.hidden = dense.info.model.hidden_size
        self._last: tuple[str, torch.Tensor] | None = None

    def _dense(self, name: str) -> torch.Tensor:
        if self._last is None or self._last[0] != name:
            self._last = None
            self._last = (name, self.dense.read([name])[name])
        return self._last[1]

    def __call__(self, name: str) -> torch.Tensor:
        match = _MLP.match(name)
        if match is None:
            return self.dense.read([name])[name]
        layer = int(match[1])
        _, dtype = self.dense.layout.params[f"decoder.layers.{layer}.mlp.linear_fc1.weight"]
        return mlp_tensor(match[2], lambda key: self._dense(f"decoder.layers.{layer}.mlp.{key}"), self.plan,
                          self.hidden, dtype, self.seed, layer)


def compare(dense: CheckpointReader, moe: CheckpointReader, tokens: torch.Tensor, runtime: Runtime) -> dict:
    """Logit and per-layer hidden-state differences of the two checkpoints on `tokens`."""
    ref, ref_hidden = LayerStream(dense.info.model, runtime).forward(tokens, dense.read_into)
    out, out_hidden = LayerStream(moe.info.model, runtime).forward(tokens, moe.read_into)
    diff = (out - ref).abs()
    per_layer = [(a - b).abs().max().item() for a, b in zip(ref_hidden, out_hidden)]
    log.info("upcycle: max |dhidden| per layer: %s", " ".join(f"{d:.2g}" for d in per_layer))
    return {"max_abs_logit_diff": diff.max().item(), "mean_abs_logit_diff": diff.mean().item(),
            "max_abs_hidden_diff": max(per_layer), "probe_tokens": tokens.numel()}


def probe_tokens(vocab_size: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=gen)


@torch.no_grad()
def logits(model: GPTModel, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Eval-mode logits [b, s, vocab] (padding dropped) of a TP=1, single-stage GPTModel."""
    model.eval()
    tokens = tokens.to(next(model.parameters()).device)
    pos = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    return model(tokens, pos, None)[..., :vocab_size].float().cpu()
