"""A Hugging Face causal LM run one decoder layer at a time, with only the current step's weights in memory.

The model is built with one decoder layer on the meta device. Each step (embedding, layer i, head) takes
its tensors under their checkpoint names, assigns them to the matching modules, runs them exactly as the
full model's forward does, and moves the modules back to meta. Usage with a `LazyReader`:

    stream = HfLayerStream(AutoConfig.from_pretrained(folder))
    h = stream.embed(tokens, {k: reader.get(k) for k in stream.embed_names()})
    for i in range(stream.num_layers):
        h = stream.layer(h, i, {k: reader.get(k) for k in stream.layer_names(i)})
    logits = stream.logits(h, {k: reader.get(k) for k in stream.head_names()})
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from factory.convert.architectures import HfArchitecture, get
from factory.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class _Param:
    """One module tensor and the checkpoint tensors (each of `source_shape`) it is built from."""

    name: str
    sources: tuple[str, ...]
    source_shape: tuple[int, ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]


def _single(ts: list[torch.Tensor]) -> torch.Tensor:
    return ts[0]


def _stack_gate_up(ts: list[torch.Tensor]) -> torch.Tensor:
    """[gate0, up0, gate1, up1, ...] -> [experts, 2 * ffn, hidden], gate rows first."""
    return torch.stack([torch.cat(ts[j:j + 2]) for j in range(0, len(ts), 2)])


def _check_supported(config) -> HfArchitecture:
    """The architecture of `config`; refuses what one shared decoder layer cannot reproduce."""
    arch = get(config.model_type, "model_type")
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"} or (not arch.sliding_window_needs_flag
                                             and getattr(config, "sliding_window", None)):
        raise ConfigError(f"{arch.name}: sliding-window attention is not supported")
    if getattr(config, "mlp_only_layers", None) or getattr(config, "decoder_sparse_step", 1) != 1:
        raise ConfigError(f"{arch.name}: mlp_only_layers/decoder_sparse_step: every layer must be an MoE layer")
    return arch


class HfLayerStream:
    """Runs a llama / mixtral / qwen3_moe / qwen2_moe causal LM (fp32, CPU, sdpa) layer by layer."""

    def __init__(self, config):
        from transformers import AutoModelForCausalLM

        self.arch = _check_supported(config)
        self.num_layers = config.num_hidden_layers
        one = copy.deepcopy(config)
        one.num_hidden_layers = 1
        if getattr(one, "layer_types", None):
            one.layer_types = one.layer_types[:1]
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(one, attn_implementation="sdpa", dtype=torch.float32,
                                                     trust_remote_code=False)
        model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)  # real buffers, on CPU
        self._model = model.eval()
        self._tied = bool(config.tie_word_embeddings)

    def embed_names(self) -> list[str]:
        """Checkpoint names `embed` needs."""
        return _names(self._embed_params())

    def layer_names(self, i: int) -> list[str]:
        """Checkpoint names `layer(..., i, ...)` needs (`model.layers.{i}.…`)."""
        return _names(self._layer_params(i))

    def head_names(self) -> list[str]:
        """Checkpoint names `logits` needs (the embedding instead of `lm_head.weight` when tied)."""
        return _names(self._head_params())

    @torch.no_grad()
    def embed(self, tokens: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """[batch, seq] token ids -> [batch, seq, hidden] input hidden states."""
        with self._loaded(self._embed_params(), weights, "embedding"):
            return self._model.model.embed_tokens(tokens)

    @torch.no_grad()
    def layer(self, hidden: torch.Tensor, i: int, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoder layer `i` (causal attention from position 0) applied to `hidden`."""
        if not 0 <= i < self.num_layers:
            raise CheckpointError(f"layer {i}: the model has {self.num_layers} layers")
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        rotary = self._model.model.rotary_emb(hidden, positions)
        with self._loaded(self._layer_params(i), weights, f"layer {i}"):
            # no mask: sdpa runs with is_causal, as the full model does for unpadded input
            return self._model.model.layers[0](hidden, attention_mask=None, position_ids=positions,
                                               position_embeddings=rotary)

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Final norm and output layer: [batch, seq, vocab] fp32 logits."""
        with self._loaded(self._head_params(), weights, "output layer"):
            return self._model.lm_head(self._model.model.norm(hidden)).float()

    def _embed_params(self) -> list[tuple[torch.nn.Module, list[_Param]]]:
        embed = self._model.model.embed_tokens
        return [(embed, _params(embed, "model.embed_tokens.", self.arch))]

    def _layer_params(self, i: int) -> list[tuple[torch.nn.Module, list[_Param]]]:
        layer = self._model.model.layers[0]
        return [(layer, _params(layer, f"model.layers.{i}.", self.arch))]

    def _head_params(self) -> list[tuple[torch.nn.Module, list[_Param]]]:
        norm, head = self._model.model.norm, self._model.lm_head
        return [(norm, _params(norm, "model.norm.", self.arch)),
                (head, _params(head, "model.embed_tokens." if self._tied else "lm_head.", self.arch))]

    @contextlib.contextmanager
    def _loaded(self, modules: list[tuple[torch.nn.Module, list[_Param]]], weights: dict[str, torch.Tensor],
                what: str) -> Iterator[None]:
        """The modules holding `weights` (checked: exactly the needed names and shapes), meta again after."""
        _check_names(_names(modules), weights, what)
        states = [(module, _state(params, weights, what)) for module, params in modules]
        try:
            for module, state in states:
                module.load_state_dict(state, strict=True, assign=True)
            yield
        finally:
            for module, _ in modules:
                module.to("meta")


def _names(modules: list[tuple[torch.nn.Module, list[_Param]]]) -> list[str]:
    return [s for _, params in modules for p in params for s in p.sources]


def _check_names(needed: list[str], weights: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = sorted(set(needed) - weights.keys()), sorted(weights.keys() - set(needed))
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
               ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def _state(params: list[_Param], weights: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Module state built from the checkpoint tensors, fp32, each source's shape checked."""
    state = {}
    for p in params:
        for s in p.sources:
            if tuple(weights[s].shape) != p.source_shape:
                raise CheckpointError(f"{what}: tensor {s} has shape {list(weights[s].shape)}, "
                                      f"expected {list(p.source_shape)}")
        state[p.name] = p.combine([weights[s].float() for s in p.sources])
    return state


def _params(module: torch.nn.Module, prefix: str, arch: HfArchitecture) -> list[_Param]:
    """Every tensor of `module` (on meta) with the checkpoint tensors under `prefix` it comes from."""
    out = []
    for name, t in module.state_dict().items():
        if name in ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"):
            out.append(_expert_param(name, tuple(t.shape), prefix, arch))
        else:
            source = arch.mlp_prefix + name[len("mlp."):] if name.startswith("mlp.") else name
            out.append(_Param(name, (prefix + source,), tuple(t.shape), _single))
    return out


def _expert_param(name: str, shape: tuple[int, ...], prefix: str, arch: HfArchitecture) -> _Param:
    """A fused [experts, rows, cols] tensor from the per-expert checkpoint tensors."""
    expert, gate, up, down = arch.experts  # the module's fused tensors <- per-expert checkpoint ones
    experts = range(shape[0])
    if name.endswith("gate_up_proj"):
        sources = tuple(prefix + expert.format(e=e) + f"{p}.weight" for e in experts for p in (gate, up))
        return _Param(name, sources, (shape[1] // 2, shape[2]), _stack_gate_up)
    sources = tuple(prefix + expert.format(e=e) + f"{down}.weight" for e in experts)
    return _Param(name, sources, shape[1:], torch.stack)
