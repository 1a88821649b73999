"""How a command ends its process once its work is done: as a normal exit, less the teardown of every module."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_process(code: int) -> NoReturn:
    """Exit with `code` the way the interpreter would, minus its teardown of every module: with torch and
    megatron-core imported that alone costs ~1 CPU-s (docs/benchmarks.md "Process exit") and frees nothing the
    system does not free anyway. Non-daemon threads are joined and atexit handlers run (logging flushes its files,
    multiprocessing reaps its children), then the standard streams are flushed."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the public API registers handlers but cannot run them
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to deliver
            pass
    os._exit(code)
