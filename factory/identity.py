"""Cheap identities of inputs: what a manifest records and the pipeline compares, without reading whole files.

The scheme (docs/pipeline.md), each the sha256 of a small description:
- a file up to 16 MiB: the sha256 of its bytes (what `sha256sum` prints);
- a larger file: its size, mtime and 16 blocks of 1 MiB at evenly spaced offsets (first and last included);
- a Megatron checkpoint root (holds the tracker): the tracker and the iteration it names, also when a stage wrote
  it (upcycle, import: its manifest.json records when, so it differs between identical saves);
- a checkpoint iteration folder: its content, from its integrity.json (every file's size and checksums, written by
  the save) less torch DCP's `.metadata` (its pickled save plan differs between saves of identical tensors;
  the shards and metadata.json it indexes are covered), else its small metadata files in full and the name and
  size of every file;
- a folder a stage wrote (holds manifest.json): that manifest, which records what produced it;
- any other folder: every file's name, size and mtime, and sampled bytes of at most 256 of them (48 MiB).
So a 200 GB input costs at most 48 MiB of reads, and a checkpoint root its newest iteration's metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FULL_BYTES = 16 << 20
BLOCKS = 16
FOLDER_BUDGET = 48 << 20
FOLDER_SAMPLED_FILES = 256
TRACKER = "latest_checkpointed_iteration.txt"
CHECKPOINT_METADATA = ("metadata.json", "common.pt", ".metadata")
SAVE_PLAN = ".metadata"


def is_megatron_checkpoint(path: Path) -> bool:
    """A Megatron checkpoint root (with its tracker) or one iter_NNNNNNN folder."""
    return (path / TRACKER).is_file() or path.name.startswith("iter_")


def identity(path: str | Path) -> str:
    """The identity of a file or folder as described in the module docstring; FileNotFoundError if absent."""
    path = Path(path)
    if path.is_file():
        if path.stat().st_size <= FULL_BYTES:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        return _digest(_file_parts(path, FULL_BYTES))
    if not path.is_dir():
        raise FileNotFoundError(path)
    if (path / TRACKER).is_file():
        iteration = (path / TRACKER).read_text().strip()
        target = path / f"iter_{int(iteration):07d}" if iteration.isdigit() else None
        inner = identity(target) if target is not None and target.is_dir() else "missing"
        return _digest([b"checkpoint", iteration.encode(), inner.encode()])
    if (path / "metadata.json").is_file() and path.name.startswith("iter_"):
        return _digest(_iteration_parts(path))
    if (path / "manifest.json").is_file():
        return identity(path / "manifest.json")
    return _digest(_folder_parts(path))


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _file_parts(path: Path, budget: int) -> list[bytes]:
    """The file's bytes when they fit `budget`; else size, mtime and evenly spaced blocks within it."""
    stat = path.stat()
    with open(path, "rb") as f:
        if stat.st_size <= budget:
            return [b"file", f.read()]
        block = max(1, budget // BLOCKS)
        parts = [b"sampled", str(stat.st_size).encode(), str(stat.st_mtime_ns).encode()]
        last = stat.st_size - block
        for k in range(BLOCKS):
            f.seek(last * k // (BLOCKS - 1))
            parts.append(f.read(block))
        return parts


def _iteration_parts(folder: Path) -> list[bytes]:
    integrity = folder / "integrity.json"
    if integrity.is_file():
        try:
            record = json.loads(integrity.read_bytes())
            record["files"].pop(SAVE_PLAN, None)
            return [b"iteration-content", json.dumps(record, sort_keys=True).encode()]
        except (ValueError, KeyError, TypeError, AttributeError):  # damaged: its bytes, as any file's
            return [b"iteration", integrity.read_bytes()]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    parts = [b"iteration-files"]
    for f in files:
        name = str(f.relative_to(folder))
        parts += [name.encode(), str(f.stat().st_size).encode()]
        if f.name in CHECKPOINT_METADATA:
            parts.append(f.read_bytes())
    return parts


def _folder_parts(folder: Path) -> list[bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    parts = [b"folder"]
    for f in files:
        stat = f.stat()
        parts += [str(f.relative_to(folder)).encode(), str(stat.st_size).encode(), str(stat.st_mtime_ns).encode()]
    sampled = files[:: max(1, -(-len(files) // FOLDER_SAMPLED_FILES))]
    budget = FOLDER_BUDGET // max(1, len(sampled))
    for f in sampled:
        parts += _file_parts(f, budget)
    return parts
