"""Atomic writes of artifacts (file and folder), and folder sizes."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from factory.errors import ConfigError

log = logging.getLogger(__name__)
OWNER_FILE = ".factory-owner.json"
"""The mark a stage leaves in its output folder (factory/ownership.py); a folder replacement keeps it."""


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


def _temp_prefix(path: Path) -> str:
    """`.<name>.<host>-<pid>-`: the prefix of a temp file or folder made for `path` by this process."""
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files and folders for `path` left by killed runs on this host; returns them.

    A temp whose maker is still running (or that was made on another host) is left alone.
    """
    removed = []
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        maker = tmp.name[len(path.name) + 2:-len(".tmp")].rsplit("-", 2)  # host, pid, random part
        if len(maker) != 3 or maker[0] != host or not maker[1].isdigit() or _pid_alive(int(maker[1])):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        log.info("removed %s (left by an interrupted run)", tmp)
        removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    """`name` as a glob pattern matching only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A temp file beside `path` (opened w+b, so the block may read back what it wrote), fsynced and renamed
    over `path` when the block succeeds; removed with any parent folders made for it, leaving `path` as it
    was, when it raises."""
    path = Path(path)
    made = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _remove_empty(made)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    with atomic_open(path) as f:
        f.write(data)


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        finish_replacement(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    except BaseException:
        _remove_empty(made)
        raise
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise
    replace_dir(tmp, path)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        with contextlib.suppress(OSError):
            folder.rmdir()


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


def _aside(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.old")


def finish_replacement(dst: Path) -> None:
    """Complete a `replace_dir` that a killed process left half-way: the earlier folder moved aside and the new
    one not yet in place is put back; one aside beside a folder in place is removed."""
    old = _aside(dst)
    if not old.is_dir():
        return
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, dst)
        log.warning("restored %s, which an interrupted replacement had moved aside", dst)


def publish_dir(src: Path, dst: Path) -> None:
    """Move the complete folder `src` to `dst`, keeping an earlier `dst`: moved aside (`move_aside`) when it holds
    anything but the owner mark, which moves into the new folder."""
    if (dst / OWNER_FILE).is_file() and not (src / OWNER_FILE).exists():
        shutil.copy2(dst / OWNER_FILE, src / OWNER_FILE)
    if dst.exists():
        if all(p.name == OWNER_FILE for p in dst.iterdir()):
            shutil.rmtree(dst)
        else:
            move_aside(dst)
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def replace_dir(src: Path, dst: Path) -> None:
    """Move the complete folder `src` to `dst`, replacing any previous `dst` (moved aside, then removed); the
    owner mark of `dst` moves into the new folder. Callers replace only a folder their stage owns. A kill
    between the two renames is undone by the next `atomic_dir` of `dst` (`finish_replacement`)."""
    old = _aside(dst)
    if (dst / OWNER_FILE).is_file() and not (src / OWNER_FILE).exists():
        shutil.copy2(dst / OWNER_FILE, src / OWNER_FILE)
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dst.parent)


def output_problem(path: Path) -> str | None:
    """Why a stage could not write its output folder `path` (a file there, a file above it, no write
    permission, a read-only file system), or None."""
    if path.exists() and not path.is_dir():
        return f"{path}: is a file, not a folder"
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor}: is a file, so the folder {path} cannot be made"
    for folder in [path, path.parent] if ancestor == path else [ancestor]:
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder}: not writable (no permission or a read-only file system)"
    return None


OS_ERROR_HINTS = {errno.EFBIG: "disk full or over the file size limit", errno.ENOSPC: "disk full",
                  errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded"}


def os_error_line(e: OSError, writing: Path) -> str:
    """An OSError as `path: what happened`, on one line; `writing` (the folder being written) stands for the
    path when the error names none (a failed write() of an open file)."""
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None] or [f"writing {writing}"]
    what = e.strerror or str(e)
    hint = OS_ERROR_HINTS.get(e.errno or 0)
    return f"{' -> '.join(paths)}: {what}{f' ({hint})' if hint and hint not in what.lower() else ''}"
