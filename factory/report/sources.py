"""Reading a run's artifacts for the report: stage manifests, metrics logs and stage reports."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.errors import FactoryError
from factory.manifest import manifests_under, read_manifest
from factory.run_state import load_state

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any | None:
    """A stage's JSON file for a figure; None (with a warning naming it when damaged) when it cannot be read."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("report: %s: unreadable (%s); left out", path, type(e).__name__)
        return None


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
    """Manifests named by pipeline.json, then any `<run_dir>/*/manifest.json` or one level deeper; a damaged
    pipeline.json or manifest is left out with a warning naming it."""
    try:
        arts = Artifacts(run_dir, pipeline=load_state(run_dir))
    except FactoryError as e:
        log.warning("report: %s", e)
        arts = Artifacts(run_dir)
    found = manifests_under(run_dir)
    for rec in (arts.pipeline or {}).get("stages", {}).values():  # recorded last: they win over stray copies
        if rec.get("manifest") and Path(rec["manifest"]).is_file():
            try:
                found.append((Path(rec["manifest"]), read_manifest(rec["manifest"])))
            except FactoryError as e:
                log.warning("report: %s; left out", e)
    for path, data in found:
        arts.manifests[data["stage"]] = data
        arts.dirs[data["stage"]] = path.parent
    return arts
