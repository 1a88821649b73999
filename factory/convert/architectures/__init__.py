"""The Hugging Face architectures conversion supports, one class per file; `get` names them on a miss."""

from __future__ import annotations

from factory.convert.architectures.base import HfArchitecture
from factory.convert.architectures.llama import Llama
from factory.convert.architectures.mixtral import Mixtral
from factory.convert.architectures.qwen_moe import Qwen2Moe, Qwen3Moe
from factory.errors import ConfigError

ARCHITECTURES: dict[str, HfArchitecture] = {a.name: a for a in (Llama(), Mixtral(), Qwen3Moe(), Qwen2Moe())}
"""In the order `export.architecture: auto` tries them."""
SUPPORTED = ", ".join(ARCHITECTURES)


def get(name: str, key: str = "architecture") -> HfArchitecture:
    """The architecture called `name` (an HF `model_type`); a ConfigError listing the supported ones."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"{key}={name!r}: not supported (supported: {SUPPORTED})")
    return ARCHITECTURES[name]
