"""The HF tokenizer files that travel with a model folder, and the facts conversion checks against."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from factory.data.encode import EOD_PIECES
from factory.errors import CheckpointError, ConfigError
from factory.io import atomic_write_json
from factory.strict_json import read_json_object

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
         "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class TokenizerFacts:
    size: int
    """len(tokenizer): every id it can produce, added tokens included."""
    special_ids: dict[str, int | None]
    """bos/eos/pad ids for config.json and generation_config.json."""
    has_chat_template: bool
    document_end_id: int | None = None
    """The id pretraining put after each document (<EOD>, see factory.data.encode), when the vocabulary has it."""
    model_type: str | None = None
    """tokenizer.json's model type ("Unigram", "BPE", ...), which decides what llama.cpp reproduces."""


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
    vocab = tok.get_vocab()
    eod = next((vocab[p] for p in EOD_PIECES if p in vocab), None)
    spec = Path(folder) / "tokenizer.json"
    model = read_json_object(spec, ConfigError).get("model") if spec.is_file() else None
    model_type = model.get("type") if isinstance(model, dict) else None
    return TokenizerFacts(size=len(tok), special_ids=ids, has_chat_template=bool(tok.chat_template),
                          document_end_id=eod, model_type=model_type)


def end_ids(eos_id: int | None, *also: int | None) -> int | list[int] | None:
    """generation_config's eos_token_id: the tokenizer's EOS plus the given end tokens, without repeats."""
    ids = list(dict.fromkeys(i for i in (eos_id, *also) if i is not None))
    return ids[0] if len(ids) == 1 else (ids or None)


def set_eos(folder: Path, token: str) -> None:
    """Make `token`, an added token of the folder's tokenizer.json, its EOS in every file that names one:
    tokenizer_config.json, special_tokens_map.json and config.json."""
    spec = read_json_object(Path(folder) / "tokenizer.json", ConfigError)
    ids = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    if token not in ids:
        raise ConfigError(f"{folder}/tokenizer.json: {token!r} is not an added token; it cannot be the EOS")
    for name, key, value in (("tokenizer_config.json", "eos_token", token),
                             ("special_tokens_map.json", "eos_token", token), ("config.json", "eos_token_id", ids[token])):
        path = Path(folder) / name
        if path.is_file():
            atomic_write_json(path, {**read_json_object(path, ConfigError), key: value})


def check_vocab(model_vocab: int, tokenizer_size: int, where: str) -> None:
    """An embedding with fewer rows than the tokenizer has ids cannot be used with it."""
    if model_vocab < tokenizer_size:
        raise CheckpointError(f"{where}: vocab_size {model_vocab} is smaller than the tokenizer "
                              f"({tokenizer_size} ids); ids >= {model_vocab} would index past the embedding")


def copy(src: Path, dst: Path) -> list[str]:
    """Copy the known tokenizer files present in `src` (tokenizer_config.json made portable); returns their names."""
    names = [n for n in FILES if (Path(src) / n).is_file()]
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(Path(src) / name, dst / name)
    make_portable(dst)
    return names


PORTABLE_CLASS = "PreTrainedTokenizerFast"
"""The tokenizer.json class transformers 4.x and 5.x both load (5.x's `TokenizersBackend` is unknown to 4.x)."""


def make_portable(folder: Path) -> None:
    """Rewrite a tokenizer.json folder's tokenizer_config.json so every loader reads it as tokenizer.json does:
    a class both transformers 4.x and 5.x know, special tokens as a list (4.x cannot read 5.x's
    `extra_special_tokens` list), every added token with its special flag (`added_tokens_decoder`), and
    BOS/EOS/prefix-space flags stated as tokenizer.json applies them (converters such as llama.cpp's default
    to adding a BOS and a leading space otherwise)."""
    config_path, spec_path = Path(folder) / "tokenizer_config.json", Path(folder) / "tokenizer.json"
    if not (config_path.is_file() and spec_path.is_file()):
        return
    config = read_json_object(config_path, ConfigError)
    spec = read_json_object(spec_path, ConfigError)
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    elif isinstance(extra, dict):  # named extras: a form both versions read
        config["extra_special_tokens"] = extra
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = PORTABLE_CLASS
    for key in ("backend", "is_local", "local_files_only"):  # 5.x load-time state, not tokenizer facts
        config.pop(key, None)
    config["added_tokens_decoder"] = {
        str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for t in spec.get("added_tokens", [])}
    added = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
    first, last = _template_ends(spec.get("post_processor"))
    config["add_bos_token"] = first is not None and added.get(first) == config.get("bos_token")
    config["add_eos_token"] = last is not None and added.get(last) == config.get("eos_token")
    config["add_prefix_space"] = _prepends_space(spec)
    atomic_write_json(config_path, config)


def _template_ends(post: dict | None) -> tuple[int | None, int | None]:
    """The ids of special tokens a TemplateProcessing puts before and after a single sequence."""
    if not post or post.get("type") != "TemplateProcessing":
        return None, None
    single = post.get("single", [])
    ids = {name: entry["ids"][0] for name, entry in post.get("special_tokens", {}).items() if entry.get("ids")}
    first = single[0].get("SpecialToken", {}).get("id") if single else None
    last = single[-1].get("SpecialToken", {}).get("id") if single else None
    return ids.get(first), ids.get(last)


def _prepends_space(spec: dict) -> bool:
    """Whether tokenizer.json puts a space (▁) before the text: a Prepend normalizer or a prepending Metaspace."""
    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            yield node
            for key in ("normalizers", "pretokenizers"):
                for child in node.get(key) or []:
                    yield from walk(child)
    steps = [*walk(spec.get("normalizer")), *walk(spec.get("pre_tokenizer"))]
    return any(s.get("type") == "Prepend" or (s.get("type") == "Metaspace" and s.get("prepend_scheme", "always")
                                              != "never") for s in steps)
