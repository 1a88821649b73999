"""The one reader of record files: JSONL, plain text, parquet and HF dataset folders, line-numbered.

Every stage that reads records (tokenizer sample, data, pack, synth seeds and logs, SFT/DPO rows, eval
files, training metrics, the run report) reads them here, so that every format, every error message and
the torn last line of a crashed writer are handled one way:

- a record's `source` is `file:line` (JSONL, text) or `file#row` (parquet, HF folders; 0-based rows);
- `errors="raise"` stops at the first malformed record with a DataError naming it; `errors="yield"`
  returns malformed records with `error` and `reason` set, for the caller to count and skip;
- bytes that are not UTF-8 are a malformed record (reason `encoding`), never silently replaced;
- JSON is parsed strictly (factory.strict_json): a key given twice or NaN makes the record malformed;
- a UTF-8 byte-order mark at the start of a file is not part of its first record;
- a last line without its newline that does not parse is a torn write: skipped with one warning;
- a file that cannot be read to its end (a compressed file cut short, damaged parquet, an I/O error) is
  one DataError naming the file and how far it was read, whatever `errors` says: its records are unknown.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from factory.errors import DataError
from factory.strict_json import JsonError, loads

log = logging.getLogger(__name__)
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".jsonl.gz": "jsonl", ".parquet": "parquet", ".txt": "text",
           ".txt.gz": "text"}
"""File suffix -> format; a folder is an HF dataset written by `save_to_disk`."""
BATCH = 1024
Errors = Literal["raise", "yield"]


@dataclass(frozen=True)
class Record:
    """One record of an input file, or one malformed record (`error` set)."""

    source: str
    """Where it came from: `file:line` or `file#row`."""
    text: str | None
    """The text field (or text unit); None when no text field was asked for. A malformed record holds
    its raw line here (shortened), so that rejected output can show it."""
    error: str = ""
    reason: str = ""
    """A short kind for counting: encoding, json (not JSON, a repeated key, NaN), not_object, missing_field,
    not_string."""
    data: dict[str, Any] | None = None
    """The whole JSON object or row, every field kept; None for plain text."""

    @property
    def id(self) -> Any:
        """The record's own `id` field, if it has one."""
        return self.data.get("id") if self.data else None


def source_position(source: str) -> int:
    """The line or row number of a record's `source`, to put records in file order (0 if it has none)."""
    tail = source.rsplit(":", 1)[-1].rsplit("#", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def detect_format(path: Path) -> str:
    """jsonl, text, parquet or hf (a folder); a DataError naming the known suffixes otherwise."""
    if path.is_dir():
        return "hf"
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise DataError(f"{path}: cannot tell the format from the name (known: {', '.join(FORMATS)} or a "
                    "datasets folder)")


def read_records(path: str | Path, text_field: str | None = "text", fmt: str = "auto",
                 text_unit: str = "paragraph", errors: Errors = "raise", split: str | None = None) -> Iterator[Record]:
    """Stream the records of one input file or folder (see the module docstring for the policies).

    `text_unit` applies to plain text: `paragraph` (blank-line separated blocks) or `line` (one record per
    non-empty line). `split` picks one split of an HF DatasetDict (default: all, in name order).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        records = _jsonl(path, text_field)
    elif fmt == "text":
        records = _text(path, text_unit)
    elif fmt == "parquet":
        records = _rows(path, text_field, _parquet_batches(path, text_field))
    elif fmt == "hf":
        records = _hf(path, text_field, split)
    else:
        raise DataError(f"{path}: unknown format '{fmt}' (known: jsonl, text, parquet, hf)")
    return records if errors == "yield" else _raise_first(records)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every object of a small JSONL file the factory wrote (metrics, logs); [] when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [r.data for r in read_records(path, text_field=None, fmt="jsonl")]


def _raise_first(records: Iterator[Record]) -> Iterator[Record]:
    for r in records:
        if r.error:
            raise DataError(f"{r.source}: {r.error}")
        yield r


UNREADABLE = (OSError, EOFError, zlib.error)
"""What reading a damaged file raises: gzip's BadGzipFile and I/O errors are OSErrors, a compressed stream
cut short is an EOFError, corrupt deflate data a zlib.error."""


def unreadable(path: Path, e: BaseException, after: str | None) -> DataError:
    """The one line for a file that could not be read to its end; `after` says how far it got (None: nothing)."""
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    if after is None:
        return DataError(f"{path}: cannot be read ({reason})")
    return DataError(f"{path}: unreadable after {after} ({reason}); the file is damaged or cut short")


def _lines(path: Path) -> Iterator[tuple[int, str | None, str, bool]]:
    """(line number, decoded text or None if not UTF-8, decode error, whether the line ended in a newline)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1:
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                yield lineno, *decode_line(raw), raw.endswith(b"\n")
    except UNREADABLE as e:
        raise unreadable(path, e, f"line {lineno}" if lineno else None) from None


def _short(raw: str) -> str:
    return raw if len(raw) <= 200 else raw[:200] + "..."


def _jsonl(path: Path, text_field: str | None) -> Iterator[Record]:
    for lineno, line, bad_bytes, ended in _lines(path):
        record = jsonl_record(line, bad_bytes, text_field, f"{path}:{lineno}", ended)
        if record is TORN:
            return
        if record is not None:
            yield record


TORN = Record("", None, "torn")
"""What `jsonl_record` returns for a torn last line (a writer cut short): skipped, with one warning."""


def jsonl_record(line: str | None, bad_bytes: str, text_field: str | None, source: str,
                 ended: bool = True) -> Record | None:
    """One JSONL line as a Record (None for a blank line, TORN for a torn last line); shared with the pack
    stage's fast path so that every reader words its errors the same way."""
    if bad_bytes:
        return Record(source, None, bad_bytes, "encoding")
    if not line.strip():
        return None
    try:
        obj = loads(line)
    except JsonError as e:
        if not ended and e.line:  # a syntax error in an unfinished last line, not a repeated key or NaN
            log.warning("%s: last line is incomplete (a write cut short); ignored", source)
            return TORN
        where = f" at column {e.column}" if e.column else ""
        return Record(source, _short(line), f"invalid JSON ({e.reason}{where})", "json")
    return _from_object(obj, text_field, source, line)


def decode_line(raw: bytes) -> tuple[str | None, str]:
    """(text, "") or (None, why the bytes are not UTF-8)."""
    try:
        return raw.decode("utf-8").rstrip("\r\n"), ""
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e.reason} at byte {e.start})"


def _from_object(obj: Any, text_field: str | None, source: str, raw: str) -> Record:
    if not isinstance(obj, dict):
        return Record(source, _short(raw), f"expected a JSON object, got {type(obj).__name__}", "not_object")
    if text_field is None:
        return Record(source, None, data=obj)
    if text_field not in obj:
        keys = ", ".join(sorted(obj))
        return Record(source, _short(raw), f"no '{text_field}' field (keys: {keys[:80]})", "missing_field", obj)
    text = obj[text_field]
    if not isinstance(text, str):
        return Record(source, _short(raw), f"'{text_field}' is {type(text).__name__}, expected a string",
                      "not_string", obj)
    return Record(source, text, data=obj)


def _text(path: Path, unit: str) -> Iterator[Record]:
    if unit not in ("line", "paragraph"):
        raise DataError(f"{path}: text_unit '{unit}' (expected line or paragraph)")
    block: list[str] = []
    start = 0
    for lineno, line, bad_bytes, _ in _lines(path):
        if bad_bytes:
            yield Record(f"{path}:{lineno}", None, bad_bytes, "encoding")
            continue
        if unit == "line":
            if line.strip():
                yield Record(f"{path}:{lineno}", line)
            continue
        if line.strip():
            start = start or lineno
            block.append(line)
        elif block:
            yield Record(f"{path}:{start}", "\n".join(block))
            block, start = [], 0
    if block:
        yield Record(f"{path}:{start}", "\n".join(block))


def _rows(where: str | Path, text_field: str | None, batches: Iterator[list[dict[str, Any]]]) -> Iterator[Record]:
    row = 0
    try:
        for batch in batches:
            for obj in batch:
                raw = repr(obj.get(text_field) if text_field else obj)
                yield _from_object(obj, text_field, f"{where}#{row}", raw)
                row += 1
    except (*UNREADABLE, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise unreadable(Path(str(where)), e, f"{row} rows" if row else None) from None


def _parquet_batches(path: Path, text_field: str | None) -> Iterator[list[dict[str, Any]]]:
    import pyarrow.parquet as pq  # with the datasets stack; only parquet inputs pay for it

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    columns = parquet.schema_arrow.names
    if text_field is not None and text_field not in columns:
        raise DataError(f"{path}: no '{text_field}' column (columns: {', '.join(columns)})")
    for group in range(parquet.num_row_groups):  # one group at a time: a damaged one is named after the rows before it
        for batch in parquet.iter_batches(batch_size=BATCH, row_groups=[group]):
            yield batch.to_pylist()


def _hf(path: Path, text_field: str | None, split: str | None) -> Iterator[Record]:
    import datasets  # heavy; only HF dataset folders pay for it

    try:
        loaded = datasets.load_from_disk(str(path))
    except (*UNREADABLE, ValueError) as e:  # a missing or cut-short arrow file is an OSError
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: not a readable datasets folder written by save_to_disk ({reason})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None and split not in loaded:
            raise DataError(f"{path}: no split '{split}' (splits: {', '.join(loaded)})")
        splits = [(split, loaded[split])] if split is not None else [(k, loaded[k]) for k in sorted(loaded)]
    else:
        splits = [("", loaded)]
    for name, ds in splits:
        if text_field is not None and text_field not in ds.column_names:
            raise DataError(f"{path}: no '{text_field}' column (columns: {', '.join(ds.column_names)})")
        where = f"{path}[{name}]" if name else str(path)
        yield from _rows(where, text_field, (_row_dicts(columns) for columns in ds.iter(batch_size=BATCH)))


def _row_dicts(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*(columns[n] for n in names))]


class ErrorBudget:
    """Counts an input's records and malformed ones; reports the first few; fails above the rate."""

    def __init__(self, path: Path, max_rate: float, report: int, key: str = "data.max_error_rate"):
        self.path, self.max_rate, self.report, self.key = path, max_rate, report, key
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
                            f"{self.key} {self.max_rate:.1%}); first: {self.first}")
