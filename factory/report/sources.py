"""Reading a run's artifacts for the report: stage manifests, metrics logs and stage reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.manifest import MANIFEST_NAME
from factory.run_state import STATE_NAME


def read_json(path: Path) -> Any | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class Artifacts:
    """What a run left on disk, by stage: the manifest and the folder it sits in."""

    run_dir: Path
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)
    pipeline: dict[str, Any] | None = None

    def metrics(self, stage: str) -> dict[str, Any]:
        return self.manifests.get(stage, {}).get("metrics", {})

    def file(self, stage: str, name: str) -> Path | None:
        """`name` beside the stage's manifest, if the stage ran and the file exists."""
        path = self.dirs[stage] / name if stage in self.dirs else None
        return path if path is not None and path.exists() else None

    def section(self, stage: str, key: str) -> Any:
        """The config section `key` as the stage's manifest recorded it."""
        return self.manifests.get(stage, {}).get("config", {}).get(key) or {}


def collect(run_dir: Path) -> Artifacts:
    """Manifests named by pipeline.json, then any `<run_dir>/*/manifest.json` or one level deeper."""
    arts = Artifacts(run_dir, pipeline=read_json(run_dir / STATE_NAME))
    paths = sorted(run_dir.glob(f"*/{MANIFEST_NAME}")) + sorted(run_dir.glob(f"*/*/{MANIFEST_NAME}"))
    recorded = [Path(r["manifest"]) for r in (arts.pipeline or {}).get("stages", {}).values() if r.get("manifest")]
    for path in paths + recorded:  # recorded last: they win over stray copies
        data = read_json(path)
        if isinstance(data, dict) and "stage" in data:
            arts.manifests[data["stage"]] = data
            arts.dirs[data["stage"]] = path.parent
    return arts
