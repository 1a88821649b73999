"""`python -m factory.train.verify_checkpoint PATH`: check every iteration of a checkpoint in full (each file's
size and xxh3-128 checksum against the save's integrity.json), one line per iteration; exit 0 when all are
intact, 1 otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factory.errors import CheckpointError, report
from factory.logs import setup_logging
from factory.train import checkpoint_root, integrity


def iteration_line(folder: Path) -> tuple[bool, str]:
    """(intact, `iter_NNNNNNN: intact (...)` or `iter_NNNNNNN: damaged: <file>: <what>`)."""
    if not integrity.recorded(folder):
        return False, f"{folder.name}: unverified: no {integrity.INTEGRITY} (saved before records existed, or deleted)"
    found = integrity.problems(folder)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return False, f"{folder.name}: damaged: {found[0]}{more}"
    files = [p for p in folder.rglob("*") if p.is_file()]
    return True, f"{folder.name}: intact ({len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB)"


def folders_of(path: Path) -> list[Path]:
    """The iteration folders `path` names: itself, or every one of a checkpoint root."""
    if checkpoint_root.is_iteration_dir(path) and path.is_dir():
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    folders = [checkpoint_root.iteration_dir(path, it) for it in checkpoint_root.saved_iterations(path)]
    if not folders:
        raise CheckpointError(f"{path}: not a checkpoint (no iter_NNNNNNN folder)")
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.train.verify_checkpoint",
                                     description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("path", type=Path, help="a checkpoint root (with iter_NNNNNNN folders) or one iteration folder")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    try:
        folders = folders_of(args.path)
    except CheckpointError as e:
        return report(e)
    results = [iteration_line(folder) for folder in folders]
    for _, line in results:
        print(line)
    if not checkpoint_root.is_iteration_dir(args.path):
        latest = checkpoint_root.latest_iteration(args.path)
        print(f"{sum(ok for ok, _ in results)} of {len(results)} iterations intact; the committed one is {latest}")
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
