"""ModelConfig <-> Hugging Face config.json, and which HF architecture computes the same function.

The fields every architecture shares are written and read here; each architecture class
(factory/convert/architectures) adds its own fields and refusals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from factory.convert.architectures import ARCHITECTURES, SUPPORTED, HfArchitecture, get
from factory.convert.architectures.base import value
from factory.errors import CheckpointError, ConfigError
from factory.io import atomic_write_json
from factory.model.config import ModelConfig, MoEConfig


def choose_architecture(m: ModelConfig, requested: str = "auto") -> str:
    """`requested`, or under auto the first HF architecture that computes the same function as `m`."""
    if requested != "auto":
        problems = get(requested, "export.architecture").blockers(m)
        if problems:
            raise ConfigError([f"export.architecture={requested}: {p}" for p in problems])
        return requested
    reasons = {name: arch.blockers(m) for name, arch in ARCHITECTURES.items()}
    for name, problems in reasons.items():
        if not problems:
            return name
    lines = ["export: no Hugging Face architecture computes the same function as this model"]
    lines += [f"  {name}: {'; '.join(p)}" for name, p in reasons.items()]
    raise ConfigError(lines)


def hf_config(m: ModelConfig, arch: HfArchitecture, special_ids: dict[str, int | None]):
    """A transformers config object for `m` as `arch` (vocab = m.vocab_size)."""
    from transformers import AutoConfig  # heavy; only export pays for it

    fields: dict[str, Any] = dict(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.query_groups, head_dim=m.head_dim, hidden_act="silu",
        max_position_embeddings=m.max_position_embeddings or m.seq_length, rms_norm_eps=m.norm_epsilon,
        initializer_range=m.init_method_std, tie_word_embeddings=not m.untie_embeddings_and_output_weights,
        rope_parameters={"rope_type": "default", "rope_theta": m.rotary_base}, attention_dropout=0.0,
        **special_ids)
    fields.update(arch.hf_fields(m))
    config = AutoConfig.for_model(arch.name, **fields)
    config.architectures = [arch.hf_class]
    return config


def write_legacy_fields(folder: Path) -> None:
    """Add to `folder/config.json` the keys transformers 4.x reads where 5.x moved them: a top-level `rope_theta`
    (4.x ignores `rope_parameters` and assumes its default theta, 1e6 for Mixtral)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and config.get("rope_theta") != theta:
        config["rope_theta"] = theta
        atomic_write_json(path, config)


def import_problems(hf: dict, arch: HfArchitecture) -> list[str]:
    """What of an HF config.json our model cannot represent (absent bias keys take transformers' defaults)."""
    out = []
    for key, default in arch.bias_defaults.items():
        if hf.get(key, default):
            absent = "" if key in hf else f" (the {arch.hf_class} default: config.json does not set it)"
            out.append(f"{key}=True{absent}: our model has no attention or MLP biases")
    if hf.get("use_sliding_window"):
        out.append("use_sliding_window=True: sliding-window attention is not supported")
    if not arch.sliding_window_needs_flag and hf.get("sliding_window"):
        out.append(f"sliding_window={hf['sliding_window']}: sliding-window attention is not supported")
    if value(hf, "hidden_act", "silu") != "silu":
        out.append(f"hidden_act={hf['hidden_act']}: only SwiGLU (silu) is supported")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        out.append(f"rope type {rope_type!r}: only unscaled RoPE is supported")
    return out + arch.import_problems(hf)


REQUIRED_COUNTS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                   "max_position_embeddings", "vocab_size")
"""config.json keys every architecture needs, each a positive integer."""
OPTIONAL_COUNTS = ("head_dim", "num_key_value_heads")
"""Keys that may be absent or null (their defaults follow from the others) but are positive integers if set."""


def field_problem(hf: dict, key: str, kind: str = "count") -> str | None:
    """Why `hf[key]` cannot be read as a positive integer (kind `count`) or a positive number (`positive`)."""
    if key not in hf:
        return f"required key '{key}' is missing"
    got = hf[key]
    number = isinstance(got, (int, float)) and not isinstance(got, bool)
    if kind == "count" and not (number and got == int(got) and got > 0):
        return f"{key}={got!r}: expected a positive integer"
    if kind == "positive" and not (number and got > 0):
        return f"{key}={got!r}: expected a positive number"
    return None


def model_config(hf: dict, *, source: str = "config.json", seq_length: int | None, make_vocab_size_divisible_by: int,
                 token_dispatcher: str) -> tuple[HfArchitecture, ModelConfig]:
    """(architecture, ModelConfig) for an HF config.json dict read from `source`; refuses what our model cannot
    represent (ConfigError), and a missing or ill-typed key in one line naming `source` and it (CheckpointError)."""
    name = hf.get("model_type")
    if name not in ARCHITECTURES:
        raise ConfigError(f"hf_import: model_type={name!r} is not supported (supported: {SUPPORTED})")
    arch = ARCHITECTURES[name]
    problem = next((p for key in REQUIRED_COUNTS if (p := field_problem(hf, key))), None) or \
        next((p for key in OPTIONAL_COUNTS if hf.get(key) is not None and (p := field_problem(hf, key))), None) or \
        field_problem(hf, "rms_norm_eps", "positive") or \
        next((f"{key}={hf[key]!r}: expected an object" for key in ("rope_parameters", "rope_scaling")
              if hf.get(key) is not None and not isinstance(hf[key], dict)), None)
    if problem:
        raise CheckpointError(f"{source}: {problem} ({arch.hf_class} config)")
    problems = import_problems(hf, arch)
    if problems:
        raise ConfigError([f"hf_import: {name}: {p}" for p in problems])
    try:
        return arch, _model_config(hf, arch, seq_length, make_vocab_size_divisible_by, token_dispatcher)
    except KeyError as e:
        raise CheckpointError(f"{source}: required key {e.args[0]!r} is missing ({arch.hf_class} config)") from None
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        raise CheckpointError(f"{source}: gives model.{key}={err.get('input')!r}: {err['msg']}") from None


def _model_config(hf: dict, arch: HfArchitecture, seq_length: int | None, make_vocab_size_divisible_by: int,
                  token_dispatcher: str) -> ModelConfig:
    heads, hidden = int(hf["num_attention_heads"]), int(hf["hidden_size"])
    head_dim = value(hf, "head_dim", hidden // heads)
    max_pos = int(hf["max_position_embeddings"])
    rope = hf.get("rope_parameters") or {}
    fields: dict[str, Any] = dict(
        num_layers=hf["num_hidden_layers"], hidden_size=hidden, ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads, num_query_groups=value(hf, "num_key_value_heads", heads),
        kv_channels=None if head_dim * heads == hidden else head_dim,
        seq_length=min(seq_length or max_pos, max_pos), max_position_embeddings=max_pos,
        vocab_size=hf["vocab_size"], make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        rotary_base=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
        norm_epsilon=hf["rms_norm_eps"], init_method_std=value(hf, "initializer_range", 0.02),
        untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", False), **arch.model_fields(hf))
    moe = arch.moe_fields(hf)
    if moe is not None:
        fields["moe"] = MoEConfig.model_validate({
            "num_experts": hf.get("num_local_experts") or hf["num_experts"],  # Qwen3-MoE saves either name
            "router_topk": hf["num_experts_per_tok"], "token_dispatcher": token_dispatcher,
            "aux_loss_coeff": value(hf, "router_aux_loss_coef", 1e-2), **moe})
    return ModelConfig.model_validate(fields)
