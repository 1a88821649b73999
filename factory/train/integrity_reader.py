"""torch DCP's file reader, checking each stored item it reads against the save's integrity record as it reads it.

A checkpoint's tensor files carry one xxh3-128 digest per stored item (`integrity.record`). Megatron's torch_dist
load strategy reads through `VerifyingReader` (installed once per process by `start_load`): every item is read
whole, once, hashed and compared, so a load reads each byte it needs once and checks it on the way. A damaged
item is logged and replaced by zeros of its shape rather than raised: the load goes on to its end on every rank
(a fully parallel load exchanges what each rank read; a rank that stopped would leave the others waiting in
that exchange), and `checkpoint.load` then agrees on the damage across ranks and raises one CheckpointError.
The log also counts the bytes read, the figure docs/stages/train.md gives per load.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import xxhash
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

from factory.train import integrity


@dataclass
class LoadLog:
    """What the readers of one load saw."""

    damage: list[str] = field(default_factory=list)
    bytes_read: int = 0


_log = LoadLog()


def start_load() -> LoadLog:
    """Route Megatron's torch_dist loads through `VerifyingReader` and return the log of the load about to start."""
    from megatron.core.dist_checkpointing.strategies import torch as torch_strategy

    global _log
    torch_strategy._get_filesystem_reader = _reader
    _log = LoadLog()
    return _log


def _reader(checkpoint_dir, cache_metadata: bool = False, async_strategy: str = "mcore") -> FileSystemReader:
    folder = Path(checkpoint_dir)
    try:
        record = integrity.read_record(folder) if integrity.recorded(folder) else {}
    except ValueError:  # a malformed record: the load's own check names it
        record = {}
    return VerifyingReader(folder, record, _log)


class VerifyingReader(FileSystemReader):
    """FileSystemReader whose items are read whole, counted and checked against their recorded digests."""

    def __init__(self, path: Path, record: dict[str, integrity.Entry], log: LoadLog):
        super().__init__(str(path))
        self.folder, self.log = path, log
        self.digests = {(name, offset): (length, digest) for name, entry in record.items()
                        for offset, length, digest in entry.segments}

    def _slice_file(self, file, sinfo) -> io.BytesIO:
        file.seek(sinfo.offset)
        data = file.read(sinfo.length)
        self.log.bytes_read += len(data)
        expected = self.digests.get((sinfo.relative_path, sinfo.offset))
        if expected is not None and (len(data), xxhash.xxh3_128_hexdigest(data)) != expected:
            self.log.damage.append(f"{self.folder / sinfo.relative_path}: checksum differs from the one the save "
                                   f"recorded (corrupted; the item at byte {sinfo.offset})")
            data = self._placeholder(sinfo)
        return io.BytesIO(data)

    def _placeholder(self, sinfo) -> bytes:
        """torch.save bytes of zeros shaped like the damaged item (None for an object), so the read completes."""
        index = next(i for i, s in self.storage_data.items()
                     if (s.relative_path, s.offset) == (sinfo.relative_path, sinfo.offset))
        stored = self._metadata.state_dict_metadata[index.fqn] if self._metadata else None
        value = None
        if isinstance(stored, TensorStorageMetadata):
            chunk = next(c for c in stored.chunks if tuple(c.offsets) == tuple(index.offset))
            value = torch.zeros(tuple(chunk.sizes), dtype=stored.properties.dtype)
        out = io.BytesIO()
        torch.save(value, out)
        return out.getvalue()

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args, **kwargs) -> None:
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        self._metadata = metadata

    _metadata = None
