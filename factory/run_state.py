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
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({getattr(e, 'msg', e)}); move it aside to re-run every "
                          "stage (no output is deleted)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    stages = state.get("stages") if isinstance(state, dict) else None
    if not isinstance(stages, dict) or not all(isinstance(r, dict) for r in stages.values()):
        raise ConfigError(f"{path}: expected {{\"stages\": {{stage: record}}}}, found {_shape(state)}; move it "
                          "aside to re-run every stage (no output is deleted)")
    return state


def _shape(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else f"{text[:57]}..."


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    state["updated_at"] = now()
    state["run_dir"] = str(run_dir.resolve())
    atomic_write_json(run_dir / STATE_NAME, state)
