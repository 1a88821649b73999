"""Dropping the optimizer state of a kept checkpoint (`checkpoint.keep_every_optimizer: false`).

A checkpoint kept for `keep_every` is there to be evaluated, exported or continued with fresh optimizer state;
its Adam state (12 of the 14 bytes per parameter of a bf16 run) is only needed to resume at it. Saves write the
optimizer's tensors to files of their own (`optimizer.__<rank>_<n>.distcp`, checkpoint_save), so dropping it
rewrites no tensor data: a copy of the folder is made of hard links to the other files, a `.metadata` without the
optimizer's entries (as Megatron's `remove_sharded_tensors` writes it) and an integrity record without its files
that says so (`optimizer_removed`), and the copy replaces the iteration with the folder steps of
`checkpoint_root.replace` (a crash leaves the iteration as it was, or the copy in place).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

from factory.io import atomic_write_json
from factory.train import checkpoint_root, integrity

log = logging.getLogger("factory.train.checkpoint")
OPTIMIZER_FILES = "optimizer."
"""Key prefix of the optimizer's tensors, and the name prefix of the files that hold them."""


def has_optimizer_files(folder: Path) -> bool:
    return any(folder.glob(f"{OPTIMIZER_FILES}*.distcp"))


def strip_optimizer(root: Path, iteration: int) -> None:
    """Replace iteration `iteration` of `root` by a copy without its optimizer state (one process)."""
    folder = checkpoint_root.iteration_dir(root, iteration)
    if not has_optimizer_files(folder):
        return
    copy = checkpoint_root.partial_dir(root, iteration)
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(OPTIMIZER_FILES) and path.name not in (".metadata",
                                                                                              integrity.INTEGRITY):
            _link(path, copy / path.name)
    _write_metadata_without_optimizer(folder / ".metadata", copy / ".metadata")
    record = json.loads((folder / integrity.INTEGRITY).read_text(encoding="utf-8"))
    files = {name: entry for name, entry in record["files"].items() if not name.startswith(OPTIMIZER_FILES)}
    files[".metadata"] = {"bytes": (copy / ".metadata").stat().st_size, "xxh3_128": integrity.checksum(copy / ".metadata")}
    atomic_write_json(copy / integrity.INTEGRITY, {**record, "files": files, "optimizer_removed": True})
    checkpoint_root.replace(root, iteration)
    log.info("checkpoint: dropped the optimizer state of iteration %d (kept for keep_every)", iteration)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _write_metadata_without_optimizer(source: Path, target: Path) -> None:
    """torch DCP's metadata file without the optimizer's entries."""
    with open(source, "rb") as f:
        metadata = pickle.load(f)
    metadata.state_dict_metadata = {k: v for k, v in metadata.state_dict_metadata.items()
                                    if not k.startswith(OPTIMIZER_FILES)}
    if metadata.planner_data is not None:
        metadata.planner_data = {k: v for k, v in metadata.planner_data.items() if not k.startswith(OPTIMIZER_FILES)}
    if metadata.storage_data is not None:
        metadata.storage_data = {k: v for k, v in metadata.storage_data.items()
                                 if not k.fqn.startswith(OPTIMIZER_FILES)}
    with open(target, "wb") as f:
        pickle.dump(metadata, f)
        f.flush()
        os.fsync(f.fileno())
