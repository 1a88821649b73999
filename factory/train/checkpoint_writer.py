"""Megatron's torch_dist checkpoint writer, set up for the saves of this process: results queue, and a writer
thread function that hashes each file as it writes it and keeps the OSErrors it meets.

Results queue: by default the writer gets it from a multiprocessing manager, a helper process it spawns at the
first save and keeps. The helper sits in the training process's group, so SIGUSR1/SIGTERM sent to the group
kill it, and the save the signal asks for dies with BrokenPipeError. The factory's saves run the writer's
threads in this process (a synchronous save in the caller's thread, a background save in one thread of this
process, `checkpointer`), where a plain queue serves; signals reach only the main thread. A fresh queue per
save also means a save that failed half-way leaves no stale result for the next one.

Writer threads: Megatron's thread function (`FileSystemWriterAsync.write_preloaded_data`) is replaced, once
per process, by `write_bucket`, the same function writing through a `HashingFile`: each stored item gets an
xxh3-128 digest of its bytes as they go to the file (torch DCP asks for the file position before and after
every item, which is where a digest is cut), so the integrity record needs no second read of the files
(`integrity.record`). Megatron's function hands an OSError back only as a RuntimeError naming its class; this
one keeps the OSError itself, so a full disk is reported as one line naming the folder.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import xxhash

from factory.train.integrity import Segment

if TYPE_CHECKING:  # for annotations only
    from megatron.core.dist_checkpointing.strategies.filesystem_async import WriteBucket
    from torch.distributed.checkpoint.filesystem import _StorageWriterTransforms


@dataclass
class WriteLog:
    """What the writer threads of one save report."""

    os_errors: list[OSError] = field(default_factory=list)
    files: dict[str, list[Segment]] = field(default_factory=dict)
    """Each file written: its stored items' (offset, length, digest), in order."""


_log = WriteLog()


def prepare() -> WriteLog:
    """Set up Megatron's torch_dist writer for one save in this process; returns the log its threads fill."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync as Writer

    global _log
    filesystem_async._results_queue = queue.Queue()
    Writer.write_preloaded_data = staticmethod(write_bucket)
    _log = WriteLog()
    return _log


def os_error_in(failure: BaseException) -> OSError | None:
    """The OSError behind a write failure (torch.save raises a RuntimeError from it), if there is one."""
    while isinstance(failure, BaseException) and not isinstance(failure, OSError):
        failure = failure.__cause__ or failure.__context__
    return failure if isinstance(failure, OSError) else None


class HashingFile:
    """A file open for writing that hashes what is written: one digest per run of bytes between two `tell()`s."""

    def __init__(self, raw):
        self.raw, self.segments = raw, []
        self._start = self._position = 0
        self._hash = xxhash.xxh3_128()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = self.raw.write(data)
        self._hash.update(memoryview(data).cast("B")[:written])
        self._position += written
        return written

    def tell(self) -> int:
        if self._position > self._start:
            self.segments.append((self._start, self._position - self._start, self._hash.hexdigest()))
            self._start, self._hash = self._position, xxhash.xxh3_128()
        return self._position

    def flush(self) -> None:
        self.raw.flush()


def write_bucket(transform_list: list[_StorageWriterTransforms], local_proc_idx: int, write_bucket: WriteBucket,
                 results_queue: queue.Queue | None, count_queue: queue.Queue | None, use_fsync: bool,
                 **kwargs) -> tuple[int, list | Exception]:
    """Megatron's writer thread function (same arguments and result protocol), hashing what it writes."""
    from torch.distributed.checkpoint.filesystem import SerializationFormat, _write_item

    log = _log
    file_name, storage_key, (bytes_data, tensor_data) = write_bucket
    try:
        with open(file_name, "wb") as raw:
            stream = HashingFile(raw)
            results = [_write_item(*transform_list, stream, data, item, storage_key,
                                   serialization_format=SerializationFormat.TORCH_SAVE)
                       for item, data in [*bytes_data, *tensor_data]]
            stream.tell()  # the last item's digest
            raw.flush()
            if use_fsync:
                os.fsync(raw.fileno())
        log.files[file_name] = stream.segments
        output = (local_proc_idx, results)
    except Exception as e:  # handed back to the writer, as Megatron's function does
        if (error := os_error_in(e)) is not None:
            log.os_errors.append(error)
        output = (local_proc_idx, e)
    if results_queue is not None:
        results_queue.put(output)
    if count_queue is not None:  # a worker thread signals it is done
        count_queue.get()
        count_queue.task_done()
    return output


def write_all(transform_list: list[_StorageWriterTransforms], buckets: list[WriteBucket],
              results_queue: queue.Queue) -> None:
    """Write every bucket (one file each) in a thread of its own and put {bucket: write results}, or the first
    exception, on the results queue: what Megatron's write_preloaded_data_multithread does, without switching
    the garbage collector off (process-wide, it would stop the training thread's collection too)."""
    with ThreadPoolExecutor(max_workers=max(1, len(buckets))) as pool:
        outputs = list(pool.map(lambda indexed: write_bucket(transform_list, *indexed, None, None, True),
                                enumerate(buckets)))
    failure = next((result for _, result in outputs if isinstance(result, Exception)), None)
    results_queue.put(failure if failure is not None else dict(outputs))
