"""Append-only JSONL logs of finished records with stable ids: written durably, resumed after a crash (the synth
stage's samples and judgements, MT-Bench's answers and judgements)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from factory.records import read_records

log = logging.getLogger(__name__)


def record_id(*parts: object) -> str:
    """A stable id: sha256 of the JSON list of `parts`, 24 hex characters."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:24]


class JsonlLog:
    """An append-only JSONL file of finished records: one fsync'd line each, read back on resume.

    `fields` are what a record must hold, with their types, to count as done: a record written by an older
    run that lacks one (a `"text": null` an endpoint once returned) is skipped, counted and reported once
    with the first file:line, so its job is done again; the line itself stays in the file."""

    def __init__(self, path: Path, fields: dict[str, type | tuple[type, ...]] | None = None):
        self.path = path
        self.fields = {"id": str, **(fields or {})}
        self.skipped = 0

    def done_ids(self) -> set[str]:
        """Ids already written; first cuts off a torn last line left by a crash mid-write."""
        if not self.path.exists():
            return set()
        self._drop_torn_tail()
        return {record["id"] for record in self.records()}

    def records(self) -> Iterator[dict[str, Any]]:
        """The valid records in file order (see the class docstring for the others)."""
        skipped, first = 0, ""
        for rec in read_records(self.path, text_field=None, fmt="jsonl"):
            why = self._invalid(rec.data)
            if why is None:
                yield rec.data
                continue
            skipped += 1
            first = first or f"{rec.source}: {why}"
        if skipped:
            log.warning("%s: skipped %d record(s) that are not usable, to be done again (first %s)",
                        self.path, skipped, first)
        self.skipped = skipped

    def _invalid(self, record: dict[str, Any]) -> str | None:
        for name, kind in self.fields.items():
            value = record.get(name)
            if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
                got = "missing" if name not in record else "null" if value is None else type(value).__name__
                return f"'{name}' is {got}"
        return None

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line before appending (the reader skips it; the next line must not join it)."""
        with self.path.open("rb+") as f:
            data = f.read()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                            self.path, len(data) - keep)
                f.truncate(keep)
                os.fsync(f.fileno())
