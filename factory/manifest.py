"""Run manifests: what a stage read, wrote and measured, written atomically beside its outputs."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import logging
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from factory.errors import DataError
from factory.identity import identity
from factory.io import atomic_write_json, tree_bytes

log = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
TRACKED_PACKAGES = ("jp-model-factory", "torch", "megatron-core", "transformers", "trl", "peft", "lm-eval",
                    "datasets", "sentencepiece", "fugashi", "safetensors", "transformer-engine")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest as a dict; a DataError naming the file when it is unreadable, not JSON or not a manifest."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid manifest ({getattr(e, 'msg', e)}; truncated or edited?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("stage"), str) or not isinstance(data.get("config"), dict):
        raise DataError(f"{path}: not a valid manifest (expected an object with 'stage' and 'config')")
    return data


def manifests_under(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable stage manifest at `<run_dir>/*/` and `<run_dir>/*/*/`; an unreadable one is skipped with a
    warning naming it."""
    out = []
    for path in sorted(run_dir.glob(f"*/{MANIFEST_NAME}")) + sorted(run_dir.glob(f"*/*/{MANIFEST_NAME}")):
        try:
            out.append((path, read_manifest(path)))
        except DataError as e:
            log.warning("%s; skipped", e)
    return out


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a process launched alone: the one that fingerprints and writes."""
    return int(os.environ.get("RANK", 0)) == 0


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
        self.history: list[dict[str, Any]] = []
        """Earlier runs this one continued (a resumed stage), oldest first."""
        self.started_at = _now()
        self._t0 = time.perf_counter()
        self._stored: dict[str, Any] | None = None

    def add_input(self, path: str | Path, role: str = "") -> None:
        """Record an input with its identity (factory/identity.py); only rank 0 computes it."""
        path = Path(path)
        fingerprint = identity(path) if is_main_process() else None
        self.inputs.append({"path": str(path), "role": role, "sha256": fingerprint})

    def add_output(self, path: str | Path, role: str = "") -> None:
        path = Path(path)
        self.outputs.append({"path": str(path), "role": role, "bytes": tree_bytes(path)})

    def record(self, **metrics: float | int | str) -> None:
        self.metrics.update(metrics)

    @classmethod
    def read(cls, path: Path) -> RunManifest:
        """An earlier run's manifest, as it was written."""
        data = read_manifest(path)
        manifest = cls(data["stage"], data["config"], Path(path).parent)
        manifest._stored = data
        return manifest

    def continues(self, earlier: dict[str, Any]) -> None:
        """This run continued `earlier` (a manifest dict): keep its metrics where this run has none, and its run
        in `history`, so that no figure of an earlier run is lost."""
        run = {k: earlier.get(k) for k in ("started_at", "ended_at", "wall_seconds", "host", "world_size")}
        run["steps_this_run"] = earlier.get("metrics", {}).get("steps_this_run")
        self.history = list(earlier.get("history", [])) + [run]
        kept = {k: v for k, v in earlier.get("metrics", {}).items() if v is not None}
        self.metrics = {**kept, **{k: v for k, v in self.metrics.items() if v is not None}}

    def to_dict(self) -> dict[str, Any]:
        if self._stored is not None:
            return self._stored
        wall = round(time.perf_counter() - self._t0, 3)
        return {
            "stage": self.stage,
            "config": self.config,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "metrics": self.metrics,
            "versions": package_versions(),
            "started_at": self.started_at,
            "ended_at": _now(),
            "wall_seconds": wall,
            "wall_seconds_total": round(wall + sum(r.get("wall_seconds") or 0 for r in self.history), 3),
            "history": self.history,
            "host": socket.gethostname(),
            "world_size": int(os.environ.get("WORLD_SIZE", 1)),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        }

    def write(self) -> Path:
        """Write manifest.json (rank 0 only: every rank of a launch holds the same record)."""
        path = self.out_dir / MANIFEST_NAME
        if is_main_process():
            atomic_write_json(path, self.to_dict())
        return path
