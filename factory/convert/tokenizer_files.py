"""The HF tokenizer files that travel with a model folder, and the facts conversion checks against."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from factory.errors import CheckpointError, ConfigError

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
         "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class TokenizerFacts:
    size: int
    """len(tokenizer): every id it can produce, added tokens included."""
    special_ids: dict[str, int | None]
    """bos/eos/pad ids for config.json and generation_config.json."""
    has_chat_template: bool


VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
"""One of these holds the vocabulary of an HF tokenizer folder (fast, SentencePiece, byte-level BPE)."""


def read(folder: Path) -> TokenizerFacts:
    """Load the tokenizer offline with stock transformers and report its size and special ids."""
    from transformers import AutoTokenizer

    if not (Path(folder) / "tokenizer_config.json").is_file():
        raise ConfigError(f"{folder}: no tokenizer_config.json (HF tokenizer files expected)")
    if not any((Path(folder) / name).is_file() for name in VOCABULARY_FILES):
        raise ConfigError(f"{folder}: no tokenizer vocabulary ({' or '.join(VOCABULARY_FILES)}) beside "
                          "tokenizer_config.json")
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{folder}: stock transformers cannot load this tokenizer ({first})") from None
    ids = {f"{name}_token_id": getattr(tok, f"{name}_token_id") for name in ("bos", "eos", "pad")}
    return TokenizerFacts(size=len(tok), special_ids=ids, has_chat_template=bool(tok.chat_template))


def check_vocab(model_vocab: int, tokenizer_size: int, where: str) -> None:
    """An embedding with fewer rows than the tokenizer has ids cannot be used with it."""
    if model_vocab < tokenizer_size:
        raise CheckpointError(f"{where}: vocab_size {model_vocab} is smaller than the tokenizer "
                              f"({tokenizer_size} ids); ids >= {model_vocab} would index past the embedding")


def copy(src: Path, dst: Path) -> list[str]:
    """Copy the known tokenizer files present in `src`; returns their names."""
    names = [n for n in FILES if (Path(src) / n).is_file()]
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(Path(src) / name, dst / name)
    return names
