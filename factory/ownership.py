"""Who may write a folder: a stage writes only into a folder that is absent, empty, or holds its own earlier
output, never into one whose files it does not know, and never where it would write over what it reads.

A stage marks its output folder when it starts (`.factory-owner.json`: the stage and the run), so a killed
first run is recognised as its own; a folder written before marks existed is recognised by its manifest, or
by holding nothing but the files the stage's plan says it writes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator

from factory.io import OWNER_FILE, atomic_write_json
from factory.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)


def owner_of(folder: Path) -> str | None:
    """The stage named by `folder`'s owner mark, else by its manifest; None when neither is readable."""
    for name in (OWNER_FILE, MANIFEST_NAME):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("stage"), str):
            return data["stage"]
    return None


WORKING_SUFFIXES = (".tmp", ".partial", ".old")
"""Hidden entries the factory's own writers leave while they work (factory/io.py, checkpoints)."""


def _is_working(name: str) -> bool:
    return name == OWNER_FILE or (name.startswith(".") and name.endswith(WORKING_SUFFIXES))


def _foreign_entries(folder: Path, own_names: set[str]) -> list[str]:
    """Entries of `folder` that are neither the stage's known outputs nor the factory's working files."""
    return sorted(p.name for p in folder.iterdir() if p.name not in own_names and not _is_working(p.name))


def ownership_problem(folder: Path, stage: str, key: str, own_names: Iterable[str] = ()) -> str | None:
    """Why `stage` may not write `folder` (one line naming it, what is in it and the key to change), or None.

    `own_names` are the entry names the stage's plan writes directly under `folder`."""
    if not folder.is_dir() or all(p.name == OWNER_FILE for p in folder.iterdir()):
        return None
    owner = owner_of(folder)
    if owner == stage:
        return None
    way_out = f"{stage} writes only into an absent or empty folder or its own earlier output: choose another {key}"
    if owner is not None:
        return f"{folder}: holds the output of stage {owner}, not {stage}; {way_out}"
    foreign = _foreign_entries(folder, set(own_names))
    if not foreign:
        return None
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return f"{folder}: holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} not written by {stage} ({shown}); {way_out}"


def overlap_problems(stage: str, writes: Iterable[Path], reads: Iterable[Path]) -> list[str]:
    """One line per path the stage reads that is, holds or lies inside a path it writes (the first one)."""
    written = list(dict.fromkeys(Path(p).resolve() for p in writes))
    out = []
    for r in dict.fromkeys(Path(p).resolve() for p in reads):
        if hit := next((w for w in written if w == r or w in r.parents or r in w.parents), None):
            out.append(f"{stage}: would write {hit} over its own input {r}; give the output another folder")
    return out


@contextlib.contextmanager
def marked(folder: Path, stage: str, run_name: str) -> Iterator[None]:
    """Mark `folder` as `stage`'s output for the block (made if absent). When the block fails and the folder
    holds nothing but the mark, the mark goes again, and the folder too if this made it."""
    made = not folder.exists()
    mark = folder / OWNER_FILE
    if not mark.exists():
        atomic_write_json(mark, {"stage": stage, "run": run_name, "created_at":
                                 datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    try:
        yield
    except BaseException:
        if folder.is_dir() and [p.name for p in folder.iterdir()] == [OWNER_FILE]:
            mark.unlink()
            if made:
                folder.rmdir()
        raise
