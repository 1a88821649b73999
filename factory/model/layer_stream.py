"""A GPTModel's forward run one decoder layer at a time, for probes on models too big to hold.

`LayerStream` keeps a 1-layer GPTModel (embedding, one decoder layer, final norm and output layer) and
has each layer's weights written into it in turn, so the probe costs one layer of memory plus the
embeddings. It computes what GPTModel.forward computes (checked against it in tests):
embedding -> every layer with the same rotary embedding and causal attention -> final norm -> logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from factory.model.build import build_gpt_model
from factory.model.config import ModelConfig

if TYPE_CHECKING:  # for annotations only
    from factory.runtime.runtime import Runtime

Fill = Callable[[dict[str, torch.Tensor]], None]
"""Writes the named weights into the given tensors in place."""

_LAYER0 = "decoder.layers.0."


class LayerStream:
    """Eval-mode, TP=1, single-process forward of `model_cfg`, fed weights by name step by step."""

    def __init__(self, model_cfg: ModelConfig, runtime: Runtime):
        self.cfg = model_cfg
        one = runtime.runnable(model_cfg).model_copy(update={"num_layers": 1})
        # built on meta, then given uninitialized storage: every weight is filled before it is used,
        # so the random init (time, and a transient copy per weight) is skipped
        meta = build_gpt_model(one, runtime, pre_process=True, post_process=True, meta=True)
        self.model = meta.to_empty(device=runtime.device).eval()
        self.device = runtime.device
        self._tensors = {k: v for k, v in self.model.state_dict(keep_vars=True).items()
                         if isinstance(v, torch.Tensor) and not k.endswith("_extra_state")}
        layer = [k for k in self._tensors if k.startswith(_LAYER0)]
        self._names = {"embed": ["embedding.word_embeddings.weight"],
                       "layer": [k[len(_LAYER0):] for k in layer],
                       "head": [k for k in self._tensors if not k.startswith(("embedding.", _LAYER0))]}
        if not model_cfg.untie_embeddings_and_output_weights:
            self._names["head"].append("embedding.word_embeddings.weight")

    def targets(self, step: str | int) -> dict[str, torch.Tensor]:
        """The 1-layer model's own tensors a step uses ("embed", a layer index or "head"), keyed by
        their full-model names: fill them in place, then run the step."""
        if isinstance(step, int):
            return {f"decoder.layers.{step}.{k}": self._tensors[_LAYER0 + k] for k in self._names["layer"]}
        return {k: self._tensors[k] for k in self._names[step]}

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, fill: Fill) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """fp32 CPU logits [batch, seq, vocab] (padded rows dropped) and each layer's output hidden
        states, for token ids [batch, seq]; `fill(targets)` writes each step's weights in place."""
        tokens = tokens.to(self.device)
        positions = torch.arange(tokens.shape[1], device=self.device).expand_as(tokens)
        fill(self.targets("embed"))
        hidden = self.model.embedding(input_ids=tokens, position_ids=positions)
        rotary = self.model.rotary_pos_emb(hidden.shape[0])
        hiddens = []
        for i in range(self.cfg.num_layers):
            fill(self.targets(i))
            out = self.model.decoder.layers[0](hidden_states=hidden, attention_mask=None, rotary_pos_emb=rotary)
            hidden = out[0] if isinstance(out, tuple) else out
            hiddens.append(hidden.float().cpu())
        fill(self.targets("head"))
        hidden = self.model.decoder.final_layernorm(hidden)
        tied = self.model.share_embeddings_and_output_weights
        logits, _ = self.model.output_layer(hidden, weight=self.model.shared_embedding_or_output_weight() if tied else None)
        return logits.transpose(0, 1)[..., : self.cfg.vocab_size].float().cpu(), hiddens
