"""Streamed readers for JSONL, parquet, plain text and local HF datasets, with malformed-record accounting."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from factory.errors import DataError

log = logging.getLogger(__name__)
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".txt": "text"}


@dataclass(frozen=True)
class Record:
    """One document, or one malformed record (`error` set, `text` holds the raw line)."""

    source: str
    """Where it came from: `file:line` (JSONL, text) or `file#row` (parquet, HF)."""
    text: str
    error: str = ""


def detect_format(path: Path) -> str:
    """jsonl, parquet, text or hf (a folder written by `Dataset.save_to_disk`)."""
    if path.is_dir():
        return "hf"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix "
                        f"(known: {', '.join(_SUFFIXES)} or a datasets folder); set format: in data.inputs")
    return fmt


def iter_records(path: str | Path, text_field: str = "text", fmt: str = "auto",
                 text_unit: str = "paragraph") -> Iterator[Record]:
    """Stream the records of one input; malformed ones come back with `error` set, never raised."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        return _iter_jsonl(path, text_field)
    if fmt == "parquet":
        return _iter_parquet(path, text_field)
    if fmt == "hf":
        return _iter_hf(path, text_field)
    return _iter_text(path, text_unit)


def _iter_jsonl(path: Path, field: str) -> Iterator[Record]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield Record(source, line.rstrip("\n"), f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            yield _from_mapping(obj, field, source, line.rstrip("\n"))


def _from_mapping(obj: object, field: str, source: str, raw: str) -> Record:
    if not isinstance(obj, dict):
        return Record(source, raw, f"expected a JSON object, got {type(obj).__name__}")
    if field not in obj:
        return Record(source, raw, f"no '{field}' field (keys: {', '.join(sorted(obj))[:80]})")
    text = obj[field]
    if not isinstance(text, str):
        return Record(source, raw, f"'{field}' is {type(text).__name__}, expected a string")
    return Record(source, text)


def _iter_text(path: Path, unit: str) -> Iterator[Record]:
    with open(path, encoding="utf-8", errors="replace") as f:
        if unit == "line":
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield Record(f"{path}:{lineno}", line.rstrip("\n"))
            return
        lines: list[str] = []
        start = 0
        for lineno, line in enumerate(f, 1):
            if line.strip():
                start = start or lineno
                lines.append(line.rstrip("\n"))
            elif lines:
                yield Record(f"{path}:{start}", "\n".join(lines))
                lines, start = [], 0
        if lines:
            yield Record(f"{path}:{start}", "\n".join(lines))


def _iter_parquet(path: Path, field: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no '{field}' column (columns: {', '.join(pf.schema_arrow.names)})")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            yield _from_value(value, field, f"{path}#{row}")
            row += 1


def _iter_hf(path: Path, field: str) -> Iterator[Record]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"{path}: not a datasets folder written by save_to_disk ({e})") from None
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, ds in splits:
        if field not in ds.column_names:
            raise DataError(f"{path}: no '{field}' column (columns: {', '.join(ds.column_names)})")
        where = f"{path}[{split}]" if split else str(path)
        for row, value in enumerate(ds.select_columns([field]).iter(batch_size=1024)):
            yield from (_from_value(v, field, f"{where}#{row * 1024 + i}") for i, v in enumerate(value[field]))


def _from_value(value: object, field: str, source: str) -> Record:
    if isinstance(value, str):
        return Record(source, value)
    return Record(source, repr(value)[:200], f"'{field}' is {type(value).__name__}, expected a string")


class ErrorBudget:
    """Counts an input's records and malformed ones; reports the first few; fails above the rate."""

    def __init__(self, path: Path, max_rate: float, report: int):
        self.path, self.max_rate, self.report = path, max_rate, report
        self.total = self.bad = 0
        self.first = ""

    def count(self, record: Record) -> None:
        self.total += 1
        if not record.error:
            return
        self.bad += 1
        self.first = self.first or f"{record.source}: {record.error}"
        if self.bad <= self.report:
            log.warning("malformed record %s: %s", record.source, record.error)

    def check(self) -> None:
        """Raise DataError when the malformed share exceeds the maximum."""
        rate = self.bad / self.total if self.total else 0.0
        if rate > self.max_rate:
            raise DataError(f"{self.path}: {self.bad} of {self.total} records malformed ({rate:.1%} > "
                            f"data.max_error_rate {self.max_rate:.1%}); first: {self.first}")
