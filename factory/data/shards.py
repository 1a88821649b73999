"""The data stage's work folder: reused by a rerun of the same config, merged into kept.jsonl + rejected.jsonl."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from factory.data.config import DataConfig
from factory.errors import DataError
from factory.records import source_position
from factory.schema import OPERATIONAL
from factory.strict_json import JsonError, loads

log = logging.getLogger(__name__)
BAD_RECORDS = ("malformed", "encoding")


def work_dir(output_dir: Path, data_config: DataConfig) -> Path:
    """`.<output>.work` beside the output: kept when it holds a run of the same config and inputs (the rerun
    continues its unfinished tasks), started afresh otherwise."""
    work = output_dir.with_name(f".{output_dir.name}.work")
    identity = _identity(data_config)
    record = work / "identity.json"
    if work.exists() and _recorded(record) != identity:
        log.warning("data: %s holds a run of another config or other inputs; starting afresh", work)
        shutil.rmtree(work)
    if not work.exists():
        work.mkdir(parents=True)
        record.write_text(json.dumps(identity, indent=1))
    else:
        log.info("data: continuing the unfinished run in %s", work)
    return work


def _recorded(record: Path) -> object:
    """The identity a work folder records; None when it has none or it is damaged (a kill mid-write)."""
    try:
        return loads(record.read_bytes())
    except (OSError, JsonError, UnicodeDecodeError):
        return None


class UnreadableInput(DataError):
    """An input a task could not read to its end (a compressed file cut short, damaged parquet)."""


def failures_dir(work: Path) -> Path:
    """Where a task records why it could not read its input (`<rank>.txt`, one line)."""
    return work / "failed"


def raise_failure(work: Path) -> None:
    """UnreadableInput with the first recorded failure's line, if a task recorded one."""
    folder = failures_dir(work)
    first = min(folder.glob("*.txt"), default=None) if folder.is_dir() else None
    if first is not None:
        raise UnreadableInput(first.read_text(encoding="utf-8").strip())


def _identity(data_config: DataConfig) -> dict[str, Any]:
    config = data_config.model_dump(mode="json", exclude={n for n, f in DataConfig.model_fields.items()
                                                 if OPERATIONAL in f.metadata})
    inputs = [{"path": str(i.path.resolve()), "bytes": _size(i.path), "mtime_ns": i.path.stat().st_mtime_ns}
              for i in data_config.inputs]
    return {"config": config, "inputs": inputs}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def shard_counts(work: Path, tasks: int, reasons: list[str]) -> list[Counter[str]]:
    """Per task (input): kept records and records rejected for each reason."""
    counts = [Counter({r: 0 for r in reasons}) for _ in range(tasks)]
    for rank, count in enumerate(counts):
        for reason in reasons:
            shard = work / "rejected" / reason / f"{rank:05d}.jsonl"
            count[reason] = _lines(shard) if shard.exists() else 0
        kept = work / "kept" / f"{rank:05d}.jsonl"
        count["kept"] = _lines(kept) if kept.exists() else 0
    return counts


def first_bad_records(work: Path, rank: int, limit: int) -> list[dict[str, Any]]:
    """The first `limit` malformed or undecodable records of input `rank`, in file order."""
    rows: list[dict[str, Any]] = []
    for reason in BAD_RECORDS:
        shard = work / "rejected" / reason / f"{rank:05d}.jsonl"
        if shard.exists():
            with open(shard, encoding="utf-8") as f:
                rows += [json.loads(line) for _, line in zip(range(limit), f)]
    return sorted(rows, key=lambda r: source_position(r["source"]))[:limit]


def merge(work: Path, tasks: int, reasons: list[str], kept: Path, rejected: Path) -> None:
    """Concatenate the kept shards in input order, and the rejected ones by reason, then input."""
    _concatenate([work / "kept" / f"{rank:05d}.jsonl" for rank in range(tasks)], kept)
    _concatenate([work / "rejected" / reason / f"{rank:05d}.jsonl" for reason in reasons for rank in range(tasks)],
                 rejected)


def _concatenate(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            if part.exists():
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())  # durable before atomic_dir renames the folder into place
