"""Strict JSON: a key given twice in one object, or NaN / Infinity (not JSON, though Python writes them), is an
error instead of a value silently dropped or carried into arithmetic. Every JSON the factory reads (records,
config.json, blend.json, safetensors headers and indexes, tokenizer files) is parsed here."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from factory.errors import DataError, FactoryError


class JsonError(ValueError):
    """Why a text is not strict JSON; `line` and `column` are 1-based where the parser knows them (else 0)."""

    def __init__(self, reason: str, line: int = 0, column: int = 0):
        super().__init__(f"{reason} at line {line} column {column}" if line else reason)
        self.reason, self.line, self.column = reason, line, column


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise JsonError(f"key {twice!r} given twice in one object (the first value would be lost)")
    return obj


def _no_constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """`json.loads` that raises JsonError for invalid JSON, a repeated key or NaN/Infinity; a leading UTF-8
    byte-order mark is skipped (editors on Windows write one)."""
    if isinstance(text, bytes):
        text = text.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    text = text.removeprefix("\ufeff")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise JsonError(e.msg, e.lineno, e.colno) from None


def read_json(path: str | Path, error: type[FactoryError] = DataError, what: str = "valid JSON") -> Any:
    """The value of a JSON file; `error` naming the file (and line) when it cannot be read or is not strict
    JSON. `what` says what the file should be ("a safetensors index"), for the message."""
    path = Path(path)
    try:
        return loads(path.read_bytes())
    except (JsonError, UnicodeDecodeError) as e:
        where = f"{path}:{e.line}" if isinstance(e, JsonError) and e.line else str(path)
        raise error(f"{where}: not {what} ({e})") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None


def read_json_object(path: str | Path, error: type[FactoryError] = DataError,
                     what: str = "valid JSON") -> dict[str, Any]:
    """`read_json` for a file whose top level must be an object."""
    value = read_json(path, error, what)
    if not isinstance(value, dict):
        raise error(f"{path}: not {what} (expected a JSON object at the top level, got {type(value).__name__})")
    return value
