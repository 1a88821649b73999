"""Checkpoint integrity: every file's size and xxh3-128 checksum, written into each iteration folder by the
save (`integrity.json`) and verified by every load (resume, cpt, upcycle, export, eval), naming the damaged
file. Each rank checksums its share of the files (its own `__<rank>_*.distcp` at save, a round-robin share
at load), so the cost is spread over the job; a folder saved before this existed is loaded unverified.
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


def problems(folder: Path, checksums: bool = True) -> list[str]:
    """What is wrong with the files of an iteration folder, one line each naming the file; [] when intact or
    when the folder predates integrity records. Collective when `checksums` under torch.distributed."""
    path = folder / INTEGRITY
    if not path.is_file():
        return []
    try:
        expected = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as e:
        return [f"{path}: unreadable integrity record ({type(e).__name__})"]
    out = []
    for name, entry in expected.items():
        f = folder / name
        if not f.is_file():
            out.append(f"{f}: missing")
        elif f.stat().st_size != entry["bytes"]:
            out.append(f"{f}: {f.stat().st_size} bytes, the save wrote {entry['bytes']} (truncated or overwritten)")
    if checksums and not out:
        rank, world = _rank_world()
        names = sorted(expected)[rank::world]
        local = [f"{folder / n}: checksum differs from the one the save recorded (corrupted)" for n in names
                 if checksum(folder / n) != expected[n]["xxh3_128"]]
        out = [line for part in _gather({str(rank): local}).values() for line in part] if world > 1 else local
    return out


def verify(folder: Path) -> None:
    """Raise a CheckpointError naming the damaged file(s) of `folder`."""
    found = problems(folder)
    if found:
        raise CheckpointError("\n".join([f"checkpoint {folder} is damaged: {found[0]}"] + found[1:]))
