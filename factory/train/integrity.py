"""Checkpoint integrity: every file's size and xxh3-128 checksum, written into each iteration folder by the
save (`integrity.json`) and verified by every load (resume, cpt, upcycle, export, eval), naming the damaged
file. Each rank checksums its share of the files (its own `__<rank>_*.distcp` at save, a round-robin share
at load), so the cost is spread over the job; a folder without a record (saved before records existed, or
its record deleted) is loaded unverified, with a warning naming it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import xxhash

from factory.errors import CheckpointError
from factory.io import atomic_write_json

log = logging.getLogger(__name__)
INTEGRITY = "integrity.json"
_CHUNK = 8 << 20


def checksum(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
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


def record(folder: Path) -> None:
    """Write `folder/integrity.json` (collective: every rank calls it after the save's files are complete)."""
    rank, world = _rank_world()
    files = _files(folder)
    mine = [f for f in files if f.name.startswith(f"__{rank}_")]
    if rank == 0:
        mine += [f for f in files if not f.name.startswith("__")]
    local = {str(f.relative_to(folder)): {"bytes": f.stat().st_size, "xxh3_128": checksum(f)} for f in mine}
    entries = _gather(local)
    if rank == 0:
        unhashed = {str(f.relative_to(folder)) for f in files} - set(entries)
        for name in unhashed:  # files of ranks that are not part of this job (never in a normal save)
            path = folder / name
            entries[name] = {"bytes": path.stat().st_size, "xxh3_128": checksum(path)}
        atomic_write_json(folder / INTEGRITY, {"algorithm": "xxh3_128", "files": dict(sorted(entries.items()))})


def recorded(folder: Path) -> bool:
    return (folder / INTEGRITY).is_file()


def problems(folder: Path, checksums: bool = True) -> list[str]:
    """What is wrong with the files of an iteration folder, one line each naming the file; [] when intact or
    when the folder has no record (a full check, `checksums`, warns about that). Collective when `checksums`
    under torch.distributed."""
    path = folder / INTEGRITY
    if not path.is_file():
        if checksums:
            log.warning("checkpoint: %s has no %s (saved before integrity records existed, or it was deleted); "
                        "its files are used unverified", folder, INTEGRITY)
        return []
    try:
        expected = _read_record(path)
    except ValueError as e:
        return [f"{path}: unreadable integrity record ({e})"]
    out = []
    for name, (size, _) in expected.items():
        f = folder / name
        if not f.is_file():
            out.append(f"{f}: missing")
        elif f.stat().st_size != size:
            out.append(f"{f}: {f.stat().st_size} bytes, the save wrote {size} (truncated or overwritten)")
    if checksums and not out:
        rank, world = _rank_world()
        names = sorted(expected)[rank::world]
        local = [f"{folder / n}: checksum differs from the one the save recorded (corrupted)" for n in names
                 if checksum(folder / n) != expected[n][1]]
        out = [line for part in _gather({str(rank): local}).values() for line in part] if world > 1 else local
    return out


def _read_record(path: Path) -> dict[str, tuple[int, str]]:
    """{file name: (bytes, checksum)} of an integrity record; ValueError saying what is malformed."""
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (KeyError, TypeError):
        raise ValueError("no 'files' table") from None
    except ValueError as e:  # invalid JSON or text
        raise ValueError(type(e).__name__) from None
    if not isinstance(files, dict):
        raise ValueError("'files' is not a table")
    out = {}
    for name, entry in files.items():
        size = entry.get("bytes") if isinstance(entry, dict) else None
        digest = entry.get("xxh3_128") if isinstance(entry, dict) else None
        if not isinstance(size, int) or not isinstance(digest, str):
            raise ValueError(f"the entry of {name!r} needs an integer 'bytes' and a string 'xxh3_128'")
        out[name] = (size, digest)
    return out


def verify(folder: Path) -> None:
    """Raise a CheckpointError naming the damaged file(s) of `folder`."""
    found = problems(folder)
    if found:
        raise CheckpointError("\n".join([f"checkpoint {folder} is damaged: {found[0]}"] + found[1:]))
