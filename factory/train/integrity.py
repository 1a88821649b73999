"""Checkpoint integrity: every file's size and xxh3-128 checksums, written into each iteration folder by the
save (`integrity.json`) and checked by every load (resume, cpt, upcycle, export, eval), naming the damaged file.

The tensor files (`__<rank>_<n>.distcp`) are hashed by the writer threads as they write them
(`checkpoint_writer`), one digest per stored item (`segments`: offset, length, digest, covering the file), so
the record costs no second read; a load checks each item it reads against its digest as it reads it
(`integrity_reader`), so no file is read twice either. The other files (`.metadata`, `metadata.json`, and
files written by other writers, such as the streaming writer's) are small or hashed whole after writing
(`xxh3_128`). A full check (`problems`) reads every file once; a folder without a record (saved before records
existed, or its record deleted) is loaded unverified, with a warning naming it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash

from factory.errors import CheckpointError
from factory.io import atomic_write_json

log = logging.getLogger(__name__)
INTEGRITY = "integrity.json"
_CHUNK = 8 << 20

Segment = tuple[int, int, str]
"""(offset, length, xxh3-128 hex digest) of one stored item of a file."""


@dataclass(frozen=True)
class Entry:
    """A file's record: its size and either one digest of the whole file or one per segment."""

    size: int
    digest: str | None = None
    segments: tuple[Segment, ...] = ()


def checksum(path: Path) -> str:
    """xxh3-128 of a whole file."""
    with open(path, "rb") as f:
        return _hash_range(f, 0, None)


def _hash_range(f, offset: int, length: int | None) -> str:
    """xxh3-128 of `length` bytes of the open file `f` from `offset` (to its end for None)."""
    h = xxhash.xxh3_128()
    f.seek(offset)
    left = float("inf") if length is None else length
    while left > 0 and (chunk := f.read(int(min(_CHUNK, left)))):
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != INTEGRITY)


def _gather(local: dict[str, dict]) -> dict[str, dict]:
    if not torch.distributed.is_initialized():
        return local
    parts: list[dict] = [{} for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(parts, local)
    return {name: entry for part in parts for name, entry in part.items()}


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def record(folder: Path, written: dict[str, list[Segment]] | None = None) -> None:
    """Write `folder/integrity.json` (collective: every rank calls it after the save's files are complete).
    `written`: this rank's files with the segment digests its writer took while writing them; rank 0 hashes
    every other file of the folder whole."""
    local = {str(Path(path).relative_to(folder)): {"bytes": Path(path).stat().st_size, "segments": segments}
             for path, segments in (written or {}).items()}
    entries = _gather(local)
    if _rank_world()[0] == 0:
        for path in _files(folder):
            name = str(path.relative_to(folder))
            if name not in entries:  # metadata, and files of writers that do not hash as they write
                entries[name] = {"bytes": path.stat().st_size, "xxh3_128": checksum(path)}
        atomic_write_json(folder / INTEGRITY, {"algorithm": "xxh3_128", "files": dict(sorted(entries.items()))})


def recorded(folder: Path) -> bool:
    return (folder / INTEGRITY).is_file()


def optimizer_removed(folder: Path) -> bool:
    """Whether retention dropped the folder's optimizer state (checkpoint_strip says so in the record)."""
    try:
        return bool(json.loads((folder / INTEGRITY).read_text(encoding="utf-8")).get("optimizer_removed"))
    except (OSError, ValueError, AttributeError):
        return False


def read_record(folder: Path) -> dict[str, Entry]:
    """{file name: Entry} of a folder's record; ValueError saying what is malformed."""
    try:
        files = json.loads((folder / INTEGRITY).read_text(encoding="utf-8"))["files"]
    except (KeyError, TypeError):
        raise ValueError("no 'files' table") from None
    except ValueError as e:  # invalid JSON or text
        raise ValueError(type(e).__name__) from None
    if not isinstance(files, dict):
        raise ValueError("'files' is not a table")
    return {name: _entry(name, entry) for name, entry in files.items()}


def _entry(name: str, entry) -> Entry:
    size = entry.get("bytes") if isinstance(entry, dict) else None
    digest = entry.get("xxh3_128") if isinstance(entry, dict) else None
    segments = entry.get("segments") if isinstance(entry, dict) else None
    valid_segments = isinstance(segments, list) and all(
        isinstance(s, list) and len(s) == 3 and isinstance(s[0], int) and isinstance(s[1], int)
        and isinstance(s[2], str) for s in segments)
    if not isinstance(size, int) or not (isinstance(digest, str) or valid_segments):
        raise ValueError(f"the entry of {name!r} needs an integer 'bytes' and a string 'xxh3_128' or "
                         "'segments' of [offset, length, digest]")
    return Entry(size, digest, tuple(tuple(s) for s in segments) if valid_segments and digest is None else ())


def problems(folder: Path, checksums: bool = True, whole_files_only: bool = False) -> list[str]:
    """What is wrong with the files of an iteration folder, one line each naming the file; [] when intact or
    when the folder has no record (a full check, `checksums`, warns about that). `whole_files_only`: checksum
    only the files recorded whole (a load checks the others' segments as it reads them). Collective when
    `checksums` under torch.distributed."""
    if not recorded(folder):
        if checksums:
            log.warning("checkpoint: %s has no %s (saved before integrity records existed, or it was deleted); "
                        "its files are used unverified", folder, INTEGRITY)
        return []
    try:
        expected = read_record(folder)
    except ValueError as e:
        return [f"{folder / INTEGRITY}: unreadable integrity record ({e})"]
    out = []
    for name, entry in expected.items():
        f = folder / name
        if not f.is_file():
            out.append(f"{f}: missing")
        elif f.stat().st_size != entry.size:
            out.append(f"{f}: {f.stat().st_size} bytes, the save wrote {entry.size} (truncated or overwritten)")
    if checksums and not out:
        rank, world = _rank_world()
        names = sorted(n for n, e in expected.items() if e.digest or not whole_files_only)[rank::world]
        local = [line for n in names if (line := _checksum_problem(folder / n, expected[n]))]
        out = [line for part in _gather({str(rank): local}).values() for line in part] if world > 1 else local
    return out


def _checksum_problem(path: Path, entry: Entry) -> str | None:
    with open(path, "rb") as f:  # one pass: segments tile the file in order
        if entry.digest is not None:
            same = _hash_range(f, 0, None) == entry.digest
        else:
            same = all(_hash_range(f, offset, length) == digest for offset, length, digest in entry.segments)
    return None if same else f"{path}: checksum differs from the one the save recorded (corrupted)"


def verify(folder: Path, whole_files_only: bool = False) -> None:
    """Raise a CheckpointError naming the damaged file(s) of `folder` (see `problems`)."""
    found = problems(folder, whole_files_only=whole_files_only)
    if found:
        raise CheckpointError("\n".join([f"checkpoint {folder} is damaged: {found[0]}"] + found[1:]))
