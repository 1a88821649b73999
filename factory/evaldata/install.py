"""Install the eval data folder from upstream (raw files at their pinned commits) or from a local mirror, each
file checked against the table before it is renamed into place; and verify an installed folder.

A file already there with the right checksums is kept (a fetch that broke off resumes where it stopped); the
folder is marked complete (MARKER) only once every file is in place, with a README naming sources and licences.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from factory.errors import DataError, VerificationError
from factory.evaldata.location import FETCH_COMMAND, MARKER
from factory.evaldata.table import FILES, EvalFile, url
from factory.io import atomic_open, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
CHUNK = 1 << 20
TIMEOUT_SECONDS = 60
UPSTREAM = "https://raw.githubusercontent.com"


class Mirror:
    """A local folder in the eval data layout (an offline copy, e.g. another machine's installed folder)."""

    def __init__(self, root: Path):
        self.root, self.name = root, str(root)

    def has(self, entry: EvalFile) -> bool:
        return (self.root / entry.local).is_file()

    def where(self, entry: EvalFile) -> str:
        return str(self.root / entry.local)

    def copy_to(self, entry: EvalFile, out: BinaryIO) -> None:
        with open(self.root / entry.local, "rb") as f:
            shutil.copyfileobj(f, out, CHUNK)


class Upstream:
    """The upstream repositories' raw files under `base` (raw.githubusercontent.com or a stand-in for it)."""

    def __init__(self, base: str):
        self.base, self.name = base, base

    def has(self, entry: EvalFile) -> bool:
        return True

    def where(self, entry: EvalFile) -> str:
        return url(self.base, entry)

    def copy_to(self, entry: EvalFile, out: BinaryIO) -> None:
        """Stream the file into `out`; network trouble is one DataError line, a failed write stays an OSError."""
        address = self.where(entry)
        try:
            response = urllib.request.urlopen(address, timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError as e:
            raise DataError(f"{address}: HTTP {e.code} {e.reason} ({entry.source.repository} at "
                            f"{entry.source.commit[:7]})") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _unreachable(address, entry, getattr(e, "reason", None) or e) from None
        with response:
            while chunk := _read(response, address, entry):
                out.write(chunk)
            expected = response.headers.get("Content-Length")
            if expected is not None and out.tell() != int(expected):  # urllib returns a cut-off body quietly
                raise _unreachable(address, entry, f"connection closed after {out.tell()} of {expected} bytes")


def _read(response, address: str, entry: EvalFile) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as e:
        raise _unreachable(address, entry, e) from None


def _unreachable(address: str, entry: EvalFile, reason: object) -> DataError:
    return DataError(f"cannot download {address} ({entry.source.repository}): {reason}; run the fetch again to "
                     f"resume, or without network install from a local copy: {FETCH_COMMAND} --from DIR")


@dataclass
class Summary:
    """What one fetch did."""

    folder: Path
    installed: list[str]
    kept: list[str]
    absent: list[str]
    """Optional files the source does not have."""

    def line(self) -> str:
        absent = f"; optional, not in the source: {', '.join(self.absent)}" if self.absent else ""
        return (f"eval data: {self.folder} complete ({len(self.installed)} files installed, {len(self.kept)} "
                f"already there{absent})")


def digests(f: BinaryIO) -> dict[str, str]:
    """sha256 and git blob id (SHA-1 of `blob <size>\\0<content>`) of an open file's whole content."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    while chunk := f.read(CHUNK):
        sha256.update(chunk)
        blob.update(chunk)
    return {"sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def mismatch(f: BinaryIO, entry: EvalFile) -> str | None:
    """How the content differs from the table (`sha256 <got>, expected <pinned>`), or None."""
    got = digests(f)
    for name in ("sha256", "git_blob"):
        pinned = getattr(entry, name)
        if pinned is not None and got[name] != pinned:
            return f"{name} {got[name]}, expected {pinned}"
    return None


def problem(folder: Path, entry: EvalFile) -> str | None:
    """Why `entry` is not correctly installed in `folder` (`missing`, a checksum mismatch), or None."""
    path = folder / entry.local
    if not path.is_file():
        return "missing"
    with open(path, "rb") as f:
        return mismatch(f, entry)


def fetch(folder: Path, source: Mirror | Upstream) -> Summary:
    """Install every file of the table that `folder` lacks or holds with other checksums, then mark it complete."""
    lacking = [e.local for e in FILES if e.required and not source.has(e)]
    if lacking:
        raise DataError(f"{source.name}: has no {', '.join(lacking)} (required); nothing installed")
    todo = {e: why for e in FILES if (why := problem(folder, e))}
    stuck = [f"{folder / e.local}: {why}" for e, why in todo.items() if why != "missing" and not source.has(e)]
    if stuck:
        raise DataError(f"{stuck[0]}, and {source.name} has no copy to replace it")
    installing = [e for e in todo if source.has(e)]
    absent = [e.local for e in todo if not source.has(e)]
    if installing or not (folder / MARKER).is_file():
        (folder / MARKER).unlink(missing_ok=True)  # complete again only once every file is in place
        for entry in installing:
            _install(folder, entry, source)
        _mark_complete(folder, source, absent)
    return Summary(folder, [e.local for e in installing], [e.local for e in FILES if e not in todo], absent)


def _install(folder: Path, entry: EvalFile, source: Mirror | Upstream) -> None:
    with atomic_open(folder / entry.local) as f:  # renamed into place only if the checksums match
        source.copy_to(entry, f)
        bad = mismatch(f, entry)
        if bad:
            raise VerificationError(f"{source.where(entry)}: {bad} (factory/evaldata/table.py); not installed, "
                                    f"{folder} is not complete")
    log.info("evaldata: %s <- %s", entry.local, source.where(entry))


def _mark_complete(folder: Path, source: Mirror | Upstream, absent: list[str]) -> None:
    atomic_write_text(folder / "README.md", readme(source.name, absent))
    atomic_write_json(folder / MARKER, {"source": source.name, "absent_optional": absent,
                                        "files": [e.local for e in FILES if e.local not in absent]})


def readme(source: str, absent: list[str]) -> str:
    """The installed folder's README: each file's upstream repository, commit, path and licence."""
    licence_file = {e.source: e.local for e in FILES if e.upstream == "LICENSE"}
    rows = [f"| `{e.local}` | {e.source.repository} | `{e.source.commit}` ({e.source.date}) | `{e.upstream}` | "
            f"{e.source.licence} (`{licence_file[e.source]}`) |" for e in FILES if e.local not in absent]
    missing = (f"\nOptional files not installed (the source has none): {', '.join(absent)}. Without a train split the "
               f"eval stage takes a task's few-shot examples from its other validation examples (and records so); "
               f"fetch from upstream to add them.\n" if absent else "")
    return (f"# Evaluation data\n\nInstalled by `{FETCH_COMMAND}` from {source}; every file matched the sha256 and "
            "git blob id pinned in the project's factory/evaldata/table.py (`python -m factory.evaldata verify` "
            "checks them again). Each file keeps its upstream licence, whose text lies beside it.\n\n"
            "| file | repository | commit | upstream path | licence |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n" + missing)


def verify(folder: Path) -> list[str]:
    """One line per file of `folder` that is missing (optional ones may be) or has other checksums, and one
    when the folder was never marked complete; empty when it is intact."""
    lines = [f"{folder / e.local}: {why}" for e in FILES
             if (why := problem(folder, e)) and (e.required or why != "missing")]
    if not (folder / MARKER).is_file():
        lines.append(f"{folder / MARKER}: missing (no fetch completed this folder; run {FETCH_COMMAND})")
    return lines


def absent(folder: Path) -> list[str]:
    """The optional files `folder` does not hold."""
    return [e.local for e in FILES if not e.required and not (folder / e.local).exists()]
