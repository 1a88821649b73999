"""Run manifests: what a stage read, wrote and measured, written atomically beside its outputs."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from factory.io import atomic_write_json, content_hash, tree_bytes

MANIFEST_NAME = "manifest.json"
TRACKED_PACKAGES = ("jp-model-factory", "torch", "megatron-core", "transformers", "trl", "peft", "lm-eval",
                    "datasets", "sentencepiece", "fugashi", "safetensors", "transformer-engine")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunManifest:
    """Collects a stage run's inputs, outputs and metrics; `write()` puts manifest.json in out_dir."""

    def __init__(self, stage: str, config: dict[str, Any], out_dir: str | Path):
        self.stage = stage
        self.config = config
        self.out_dir = Path(out_dir)
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.metrics: dict[str, float | int | str] = {}
        self.started_at = _now()
        self._t0 = time.perf_counter()

    def add_input(self, path: str | Path, role: str = "") -> None:
        """Record an input with its content hash (a stage dir is identified by its manifest)."""
        path = Path(path)
        self.inputs.append({"path": str(path), "role": role, "sha256": content_hash(path)})

    def add_output(self, path: str | Path, role: str = "") -> None:
        path = Path(path)
        self.outputs.append({"path": str(path), "role": role, "bytes": tree_bytes(path)})

    def record(self, **metrics: float | int | str) -> None:
        self.metrics.update(metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "config": self.config,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "metrics": self.metrics,
            "versions": package_versions(),
            "started_at": self.started_at,
            "ended_at": _now(),
            "wall_seconds": round(time.perf_counter() - self._t0, 3),
            "host": socket.gethostname(),
            "world_size": int(os.environ.get("WORLD_SIZE", 1)),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        }

    def write(self) -> Path:
        path = self.out_dir / MANIFEST_NAME
        atomic_write_json(path, self.to_dict())
        return path
