"""Atomic writes of artifacts (file and folder), and folder sizes."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from factory.errors import ConfigError

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory that replaces `path` only if the block succeeds.

    On an exception the temp directory is removed, with any parent folders made for it, and `path`
    is left as it was.
    """
    path = Path(path)
    made = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    replace_dir(tmp, path)


def tree_bytes(path: str | Path) -> int:
    """Total size in bytes of a file or all files under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def move_aside(path: Path, run_dir: Path | None = None) -> Path:
    """Rename `path` to `<path>.prev-<UTC time>` (never deleting it); refuses a folder holding `run_dir`."""
    resolved = path.resolve()
    if run_dir is not None and (resolved == run_dir.resolve() or resolved in run_dir.resolve().parents):
        raise ConfigError(f"{path}: holds the run folder {run_dir}; give the stage its own output_dir")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.prev-{stamp}")
    n = 1
    while target.exists():  # two moves within one second
        target, n = path.with_name(f"{path.name}.prev-{stamp}-{n}"), n + 1
    os.replace(path, target)
    _fsync_dir(path.parent)
    log.warning("moved %s aside to %s (%.3g GB, kept)", path, target, tree_bytes(target) / 1e9)
    return target


def replace_dir(src: Path, dst: Path) -> None:
    """Move the complete folder `src` to `dst`, replacing any previous `dst` (moved aside, then removed)."""
    old = dst.with_name(f".{dst.name}.old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dst.parent)
