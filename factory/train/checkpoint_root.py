"""A checkpoint root on disk: its iteration folders and tracker, the steps that publish, replace and prune an
iteration, and the recovery of whatever a killed process left between two of those steps.

```
<root>/latest_checkpointed_iteration.txt   the committed iteration; it moves last
<root>/iter_0000100/                       a complete iteration (only ever made by a rename)
<root>/.iter_0000100.partial/              a save being written (complete once its integrity.json is in)
<root>/.iter_0000100.old/                  the copy of iteration 100 that a new save of 100 replaces
<root>/.iter_0000100.pruned/               an iteration retention removes
```
Every step is one rename or one removal of a hidden folder, so a process killed between two steps leaves
one of these states, and `recover` (at the start of a run, before anything reads the root) makes it plain:

| killed after                          | on disk                        | recover                              |
|---------------------------------------|--------------------------------|--------------------------------------|
| writing the partial (files, record)   | `.partial`                     | removes it: the save is redone       |
| moving the old copy aside             | `.old`, no `iter_N`            | moves `.old` back: the state before  |
| moving the new copy in, the tracker   | `.old` and the new `iter_N`    | removes `.old`                       |
| moving a first copy of N in           | `iter_N` above the tracker     | nothing: N is saved again, replaced  |
| a retention rename                    | `.pruned`                      | removes it                           |

An iteration folder is never removed in place: one deleted half-way would still look like an iteration.
Readers need no recovery: hidden names are not iterations, and a tracker naming a missing folder (the moment
a re-save has moved the old copy aside) reads as the newest iteration below it, with a warning.
`io.replace_dir` does the same aside-and-rename for stage outputs; an iteration needs the tracker between
the steps and a recovery that knows them, so they are spelled out here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from factory.errors import CheckpointError
from factory.io import atomic_write_text

log = logging.getLogger("factory.train.checkpoint")

TRACKER = "latest_checkpointed_iteration.txt"
_ITER_RE = re.compile(r"^iter_(\d{7})$")
_HIDDEN_RE = re.compile(r"^\.iter_(\d{7})\.(partial|old|pruned)$")


def iteration_dir(root: Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def partial_dir(root: Path, iteration: int) -> Path:
    """Where a save of `iteration` writes before it is published."""
    return _hidden(root, iteration, "partial")


def _hidden(root: Path, iteration: int, kind: str) -> Path:
    return Path(root) / f".{iteration_dir(root, iteration).name}.{kind}"


def is_iteration_dir(path: Path) -> bool:
    return bool(_ITER_RE.match(path.name))


def iteration_of(folder: Path) -> int:
    """N of an `iter_NNNNNNN` folder."""
    return int(_ITER_RE.match(Path(folder).name).group(1))


def saved_iterations(root: Path) -> list[int]:
    """The iteration folders under `root`, in order (hidden ones, being written or removed, do not count)."""
    return sorted(int(m.group(1)) for p in Path(root).iterdir() if p.is_dir() and (m := _ITER_RE.match(p.name)))


def latest_iteration(root: Path) -> int | None:
    """The committed iteration: the one the tracker names, or, when the tracker is missing, unreadable or names
    a folder that is not there, the newest iteration folder at or below it (with a warning); None for a root
    without tracker and iteration folders. A tracker with no folder to fall back to is a CheckpointError (the
    run it belongs to is not started over). Cheap: no file is verified here (see checkpoint.newest_intact)."""
    root = Path(root)
    present = saved_iterations(root) if root.is_dir() else []
    tracked, why = _read_tracker(root)
    if tracked is not None and tracked in present:
        return tracked
    if not present and not (root / TRACKER).exists():
        return None
    if tracked is not None:
        why = f"names iteration {tracked}, but {iteration_dir(root, tracked)} is missing"
    below = [it for it in present if tracked is None or it <= tracked]
    if not below:
        raise CheckpointError(f"{root / TRACKER} {why}, and no iteration folder below it is left")
    log.warning("checkpoint: %s %s; using iteration %d", root / TRACKER, why, below[-1])
    return below[-1]


def _read_tracker(root: Path) -> tuple[int | None, str]:
    """(the tracker's iteration, "") or (None, why it names none)."""
    tracker = root / TRACKER
    if not tracker.is_file():
        return None, "is missing"
    text = tracker.read_text(errors="replace").strip()
    if not text.isdigit():
        return None, f"holds {text[:40]!r}, not an iteration number"
    return int(text), ""


def publish(root: Path, iteration: int) -> None:
    """Make the complete `.iter_N.partial` the committed iteration N (one process; see the module docstring)."""
    final, partial, old = iteration_dir(root, iteration), partial_dir(root, iteration), _hidden(root, iteration, "old")
    if final.exists():
        _discard(old)  # only a leftover of an earlier replacement: the current copy is `final`
        os.replace(final, old)  # never deleted before its replacement is in place
    os.replace(partial, final)
    # Moves last; its atomic write fsyncs `root`, which makes the renames above durable with it.
    atomic_write_text(Path(root) / TRACKER, f"{iteration}\n")
    _discard(old)


def prune(root: Path, current: int, keep_last: int | None, keep_every: int | None) -> list[int]:
    """Remove iterations up to `current` beyond the last `keep_last`, keeping multiples of `keep_every`; returns
    those kept only for `keep_every`. Folders above `current` (left by an earlier attempt past a fallback) are not
    counted: a save replaces them."""
    if keep_last is None:
        return []
    iterations = [it for it in saved_iterations(root) if it <= current]
    recent = set(iterations[-keep_last:]) | {current}
    kept_every = [it for it in iterations if it not in recent and keep_every and it % keep_every == 0]
    for it in iterations:
        if it in recent or it in kept_every:
            continue
        pruned = _hidden(root, it, "pruned")
        os.replace(iteration_dir(root, it), pruned)
        _discard(pruned)
        log.info("checkpoint: removed iteration %d (keep_last=%s, keep_every=%s)", it, keep_last, keep_every)
    return kept_every


def replace(root: Path, iteration: int) -> None:
    """Put the complete `.iter_N.partial` in place of the (older) iteration N, the tracker untouched: the same
    steps as `publish`, for a rewritten copy of an iteration below the committed one."""
    final, partial, old = iteration_dir(root, iteration), partial_dir(root, iteration), _hidden(root, iteration, "old")
    _discard(old)
    os.replace(final, old)
    os.replace(partial, final)
    _discard(old)


def recover(root: Path) -> None:
    """Turn what an interrupted save left under `root` back into plain iterations (one process, before any
    reader; the table in the module docstring)."""
    if not Path(root).is_dir():
        return
    for path in sorted(Path(root).iterdir()):
        m = _HIDDEN_RE.match(path.name)
        if not m:
            continue
        iteration, kind = int(m.group(1)), m.group(2)
        final = iteration_dir(root, iteration)
        if kind == "old" and not final.exists():
            os.replace(path, final)
            log.warning("checkpoint: a save replacing iteration %d was interrupted before its new copy was in "
                        "place; %s moved back", iteration, final)
        else:
            _discard(path)
            log.info("checkpoint: removed %s (left by an interrupted save)", path)


def _discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
