"""A run folder's pipeline record, `<run.dir>/pipeline.json`: per stage its fingerprint, status and manifest."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from factory.errors import ConfigError
from factory.io import atomic_write_json

STATE_NAME = "pipeline.json"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def load_state(run_dir: Path) -> dict[str, Any]:
    """The run's record (`{"stages": {}}` for a new run); a one-line error when the file is damaged."""
    path = run_dir / STATE_NAME
    if not path.is_file():
        return {"stages": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg}); delete it to re-run every stage") from None


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    state["updated_at"] = now()
    atomic_write_json(run_dir / STATE_NAME, state)
