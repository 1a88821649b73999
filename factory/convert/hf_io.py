"""Hugging Face safetensors folders: an index-driven lazy reader and size-capped sharded writers."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import torch

from factory.errors import CheckpointError
from factory.io import atomic_write_json
from factory.strict_json import JsonError, loads, read_json_object

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class LazyReader:
    """Reads tensors by name with plain file reads: only the index and the shard headers are read up
    front, and a tensor costs its own bytes (no memory map keeps a shard's pages resident)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if (self.folder / INDEX).is_file():
            weight_map = _read_index(self.folder / INDEX)
        elif (self.folder / SINGLE).is_file():
            weight_map = {k: SINGLE for k in _read_header(self.folder / SINGLE)[0] if k != "__metadata__"}
        else:
            raise CheckpointError(f"{self.folder}: no {INDEX} or {SINGLE}")
        missing = sorted({f for f in weight_map.values() if not (self.folder / f).is_file()})
        if missing:
            raise CheckpointError(f"{self.folder}: missing shard(s) named by {INDEX}: {', '.join(missing)}")
        self.weight_map: dict[str, str] = weight_map
        self._headers: dict[str, tuple[dict, int]] = {}

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        shard = self.weight_map.get(name)
        if shard is None:
            raise CheckpointError(f"{self.folder}: tensor {name} is missing")
        if shard not in self._headers:
            self._headers[shard] = _read_header(self.folder / shard)
        header, data_start = self._headers[shard]
        dtype, shape, begin, end = _entry(header, name, self.folder / shard)
        buffer = bytearray(end - begin)
        with open(self.folder / shard, "rb") as f:
            f.seek(data_start + begin)
            if f.readinto(buffer) != len(buffer):
                raise CheckpointError(f"{self.folder / shard}: truncated at tensor {name}")
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape) if buffer else torch.empty(shape, dtype=dtype)


def _entry(header: dict, name: str, path: Path) -> tuple[torch.dtype, list[int], int, int]:
    """(dtype, shape, begin, end) of tensor `name` in a shard header; one line naming what is wrong."""
    entry = header.get(name)
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: no tensor {name} in its header")
    if entry.get("dtype") not in _FROM_NAME:
        raise CheckpointError(f"{path}: tensor {name} has dtype {entry.get('dtype')}, which cannot be read (supported: "
                              f"{', '.join(_FROM_NAME)}; a quantized checkpoint must be dequantized first)")
    dtype, shape, offsets = _FROM_NAME[entry["dtype"]], entry.get("shape"), entry.get("data_offsets")
    counts = isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
    spans = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)
    if not (counts and spans and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{path}: tensor {name}: header gives shape {shape!r} and data_offsets {offsets!r}")
    if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
        raise CheckpointError(f"{path}: tensor {name}: {offsets[1] - offsets[0]} bytes for shape {shape} "
                              f"{entry['dtype']} ({math.prod(shape) * dtype.itemsize} expected)")
    return dtype, shape, offsets[0], offsets[1]


def _read_index(path: Path) -> dict[str, str]:
    """The weight map of a sharded checkpoint's index."""
    weight_map = read_json_object(path, CheckpointError, "a safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path}: not a safetensors index (expected a 'weight_map' of tensor -> file name)")
    return weight_map


def _read_header(path: Path) -> tuple[dict, int]:
    """(header JSON, offset of the data) of a safetensors file."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        raw = f.read(size) if 0 < size < 100 << 20 else b""
    try:
        header = loads(raw)
    except (JsonError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file (unreadable header: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    return header, 8 + size


class StreamingShardWriter:
    """Writes a planned list of tensors straight into safetensors shards, keeping none in memory.

    `plan` is the ordered (name, shape, dtype) of every tensor; shards are assigned up front (a new one
    starts when a tensor would push the current one past `max_bytes`; one tensor may exceed it alone),
    so each shard's header is written when it opens and every `add` appends its bytes at once.
    `names` are the shard file names, `total_bytes` the size of all tensors.
    """

    def __init__(self, folder: Path, plan: list[tuple[str, tuple[int, ...], torch.dtype]], max_bytes: int):
        self.folder = Path(folder)
        self._plan = [(name, tuple(shape), dtype) for name, shape, dtype in plan]
        for name, _, dtype in self._plan:
            if dtype not in _DTYPES:
                raise CheckpointError(f"tensor {name}: dtype {dtype} cannot be written "
                                      f"(supported: {', '.join(map(str, _DTYPES))})")
        self._shards = _assign_shards(self._plan, max_bytes)
        self.names = [f"model-{i + 1:05d}-of-{len(self._shards):05d}.safetensors" for i in range(len(self._shards))]
        self.total_bytes = sum(_nbytes(shape, dtype) for _, shape, dtype in self._plan)
        self._next = 0  # index into the plan of the tensor `add` expects
        self._shard, self._shard_end = -1, 0  # the open shard, and the plan index just past it
        self._file = None

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append `tensor`, which must be the next planned one (same name, shape and dtype)."""
        if self._next == len(self._plan):
            raise CheckpointError(f"{self.folder}: tensor {name} is not in the plan (all {len(self._plan)} written)")
        expected = self._plan[self._next]
        got = (name, tuple(tensor.shape), tensor.dtype)
        if got != expected:
            raise CheckpointError(f"{self.folder}: expected tensor {expected[0]} {list(expected[1])} {expected[2]} "
                                  f"next, got {name} {list(got[1])} {got[2]}")
        if self._file is None:
            self._open_next_shard()
        self._file.write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self._next += 1
        if self._next == self._shard_end:
            self._close_shard()

    def finish(self) -> list[str]:
        """Write the index once every planned tensor was added; returns the shard names."""
        if self._next < len(self._plan):
            raise CheckpointError(f"{self.folder}: tensor {self._plan[self._next][0]} was never written "
                                  f"({len(self._plan) - self._next} of {len(self._plan)} missing)")
        weight_map = {name: self.names[i] for i, shard in enumerate(self._shards) for name, _, _ in shard}
        atomic_write_json(self.folder / INDEX, {"metadata": {"total_size": self.total_bytes},
                                                "weight_map": dict(sorted(weight_map.items()))})
        return list(self.names)

    def _open_next_shard(self) -> None:
        self._shard += 1
        shard = self._shards[self._shard]
        self._shard_end = self._next + len(shard)
        self._file = open(self.folder / self.names[self._shard], "wb")
        self._file.write(_header(shard))

    def _close_shard(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None


_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


_FROM_NAME = {name: dtype for dtype, name in _DTYPES.items()}


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _assign_shards(plan: list, max_bytes: int) -> list[list]:
    """Plan entries grouped into shards of at most `max_bytes` (a lone tensor may exceed it)."""
    shards: list[list] = []
    size = 0
    for entry in plan:
        nbytes = _nbytes(entry[1], entry[2])
        if not shards or size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def _header(shard: list) -> bytes:
    """The safetensors prefix of a shard: 8-byte little-endian length, then space-padded JSON."""
    header, offset = {}, 0
    for name, shape, dtype in shard:
        end = offset + _nbytes(shape, dtype)
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
