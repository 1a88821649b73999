"""Streamed text inputs (.txt, .jsonl, local HF datasets) split into a training sample and held-out lines."""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from factory.records import UNREADABLE, read_records, unreadable

TEXT_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")


def input_kind(path: Path) -> str | None:
    """'dataset', 'txt', 'jsonl', or None when the path is not a supported input."""
    if path.is_dir():
        return "dataset"
    name = path.name.lower()
    for suffix in TEXT_SUFFIXES:
        if name.endswith(suffix):
            return suffix.split(".")[1]
    return None


def input_bytes(paths: Iterable[Path]) -> int:
    """Approximate text bytes of all inputs, to pace sampling: a datasets folder counts its .arrow files,
    a .gz file its size times the compression ratio of its first MiB."""
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*.arrow"))
        elif p.name.endswith(".gz"):
            total += _gzip_text_bytes(p)
        else:
            total += p.stat().st_size
    return total


def _gzip_text_bytes(path: Path) -> int:
    try:
        with gzip.open(path, "rb") as f:
            text = len(f.read(1 << 20))
            compressed = f.fileobj.tell()
    except UNREADABLE as e:  # cut short or not gzip at all: the reader would stop on it anyway
        raise unreadable(path, e, None) from None
    return round(path.stat().st_size * text / max(1, compressed))


def iter_lines(paths: Iterable[Path], text_field: str) -> Iterator[str]:
    """Non-empty lines of every input in order; a document's newlines separate training sentences.

    Malformed records stop the stage with `file:line` (factory.records, `errors="raise"`)."""
    for path in paths:
        fmt = {"dataset": "hf", "jsonl": "jsonl", "txt": "text"}[input_kind(path)]
        for record in read_records(path, text_field, fmt=fmt, text_unit="line"):
            yield from (line for line in record.text.split("\n") if line.strip())


@dataclass
class Sampler:
    """Routes a stream of lines: a held-out share (up to a cap), then a Bernoulli sample up to a byte budget.

    The keep rate is budget / input bytes, so a sample of a huge corpus is spread over all of it.
    """

    heldout_fraction: float
    heldout_max_bytes: int
    train_budget: int | None
    total_bytes: int
    seed: int
    heldout: list[str] = field(default_factory=list)
    bytes_read: int = 0
    lines_read: int = 0
    train_lines: int = 0
    train_bytes: int = 0
    heldout_bytes: int = 0

    def train_lines_of(self, lines: Iterable[str]) -> Iterator[str]:
        """Yield the training lines of `lines`; held-out lines collect in `self.heldout`."""
        rng = random.Random(self.seed)
        keep = 1.0 if self.train_budget is None else min(1.0, self.train_budget / max(1, self.total_bytes))
        for line in lines:
            size = len(line.encode("utf-8")) + 1
            self.lines_read += 1
            self.bytes_read += size
            if rng.random() < self.heldout_fraction and self.heldout_bytes + size <= self.heldout_max_bytes:
                self.heldout.append(line)
                self.heldout_bytes += size
                continue
            if rng.random() >= keep:
                continue
            if self.train_budget is not None and self.train_bytes + size > self.train_budget:
                return
            self.train_lines += 1
            self.train_bytes += size
            yield line

    def summary(self) -> dict[str, int]:
        return {"lines_read": self.lines_read, "bytes_read": self.bytes_read, "train_lines": self.train_lines,
                "train_bytes": self.train_bytes, "heldout_lines": len(self.heldout),
                "heldout_bytes": self.heldout_bytes}
