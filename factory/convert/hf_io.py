"""Hugging Face safetensors folders: an index-driven lazy reader and a size-capped sharded writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from factory.errors import CheckpointError
from factory.io import atomic_write_json

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class LazyReader:
    """Reads tensors by name; only the index is read up front and one shard is open at a time."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if (self.folder / INDEX).is_file():
            weight_map = json.loads((self.folder / INDEX).read_text())["weight_map"]
        elif (self.folder / SINGLE).is_file():
            from safetensors import safe_open

            with safe_open(self.folder / SINGLE, "pt") as f:
                weight_map = {k: SINGLE for k in f.keys()}
        else:
            raise CheckpointError(f"{self.folder}: no {INDEX} or {SINGLE}")
        missing = sorted({f for f in weight_map.values() if not (self.folder / f).is_file()})
        if missing:
            raise CheckpointError(f"{self.folder}: missing shard(s) named by {INDEX}: {', '.join(missing)}")
        self.weight_map: dict[str, str] = weight_map
        self._open: tuple[str, object] | None = None

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        shard = self.weight_map.get(name)
        if shard is None:
            raise CheckpointError(f"{self.folder}: tensor {name} is missing")
        if self._open is None or self._open[0] != shard:
            self._open = (shard, safe_open(self.folder / shard, "pt"))
        return self._open[1].get_tensor(name)


class ShardWriter:
    """Collects tensors into shards of at most `max_bytes` (one tensor may exceed it alone)."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = Path(folder), max_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self._flush()
        # clone: safetensors refuses views that share storage, and the source may be freed
        self._pending[name] = tensor.detach().to("cpu").clone()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        save_file(self._pending, str(self.folder / f"shard-{len(self._shards):05d}.tmp"), metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Name the shards model-0000i-of-0000N.safetensors and write the index; returns the shard names."""
        if self._pending:
            self._flush()
        n, weight_map, names = len(self._shards), {}, []
        for i, keys in enumerate(self._shards):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / f"shard-{i:05d}.tmp", self.folder / name)
            weight_map.update({k: name for k in keys})
            names.append(name)
        atomic_write_json(self.folder / INDEX, {"metadata": {"total_size": self.total_bytes},
                                                "weight_map": dict(sorted(weight_map.items()))})
        return names
