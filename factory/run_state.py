"""A run folder's pipeline record, `<run.dir>/pipeline.json`: per stage its fingerprint, status and manifest.

Several writers may record stages of one run at once (the jobs of a Slurm chain, factory/launch/chain.py), so
every change is a read-modify-write of one stage's record under a short lock (`records_lock`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
from pathlib import Path
from typing import Any, Iterator

from factory.errors import ConfigError
from factory.io import atomic_write_json

STATE_NAME = "pipeline.json"
RECORDS_LOCK = ".records.lock"
"""In the run folder: held (blocking flock) only while one writer reads, changes and writes a record file."""


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


@contextlib.contextmanager
def records_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's short lock around a read-modify-write of pipeline.json or chain.json.

    The lock file stays (removing it would let a waiter lock a file that is gone); the kernel frees the flock
    when its holder dies."""
    with open(run_dir / RECORDS_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def record_stage(run_dir: Path, stage: str, record: dict[str, Any]) -> None:
    """Replace `stage`'s record in pipeline.json, keeping every other stage's as the file holds it now."""
    with records_lock(run_dir):
        state = load_state(run_dir)
        state["stages"][stage] = record
        save_state(run_dir, state)
