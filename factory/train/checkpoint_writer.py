"""Megatron's torch_dist checkpoint writer, set up for one synchronous save in this process."""

from __future__ import annotations

import functools
import queue
from typing import Callable


def prepare() -> list[OSError]:
    """Set up Megatron's torch_dist writer for one synchronous save in this process; returns the list that
    collects the OSErrors its write threads meet during that save.

    Results queue: by default the writer gets it from a multiprocessing manager, a helper process it spawns at
    the first save and keeps. The helper sits in the training process's group, so SIGUSR1/SIGTERM sent to the
    group kill it, and the save the signal asks for dies with BrokenPipeError. A synchronous save runs the
    writer (and its threads) in this process, where a plain queue serves it; the factory never uses Megatron's
    asynchronous save, the one case that needs a queue shared across processes. A fresh queue per save also
    means a save that failed half-way leaves no stale result for the next one.

    Errors: each write thread hands an OSError back as a value, and the writer raises only a RuntimeError
    that names its class ("error: <class 'OSError'>"); which error it was is lost. The thread function is
    wrapped (once per process) to keep them, so a full disk is reported as one line naming the folder.
    """
    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync as Writer

    filesystem_async._results_queue = queue.Queue()
    if not hasattr(Writer.write_preloaded_data, "os_errors"):
        Writer.write_preloaded_data = staticmethod(_keeping_os_errors(Writer.write_preloaded_data))
    errors = Writer.write_preloaded_data.os_errors
    errors.clear()
    return errors


def os_error_in(failure) -> OSError | None:
    """The OSError behind a write failure (torch.save raises a RuntimeError from it), if there is one."""
    while isinstance(failure, BaseException) and not isinstance(failure, OSError):
        failure = failure.__cause__ or failure.__context__
    return failure if isinstance(failure, OSError) else None


def _keeping_os_errors(write: Callable) -> Callable:
    errors: list[OSError] = []

    @functools.wraps(write)  # the writer reads its signature
    def keeping(*args, **kwargs):
        result = write(*args, **kwargs)  # (thread index, its write results or the exception it met)
        failure = os_error_in(result[-1]) if isinstance(result, tuple) else None
        if failure is not None:
            errors.append(failure)
        return result

    keeping.os_errors = errors
    return keeping
