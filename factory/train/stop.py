"""Stop signals that arrive while a training stage starts: kept for the first step, not lost.

The training loop saves a checkpoint and exits after the current step on SIGTERM or SIGUSR1. Before it
runs (imports, model build, checkpoint load: minutes for a large model) those signals would kill the
process, or be lost under the Slurm scripts, whose torchrun (and so its workers) starts with them ignored.
`listening()` records them for the whole stage; the loop asks `received()` when it takes over, so such a
run stops after its first step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger("factory.train")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_received: list[str] = []


@contextlib.contextmanager
def listening() -> Iterator[None]:
    """Record stop signals until the block ends; then restore the previous handlers, or, once a stop
    was asked for, leave the signals ignored: the process is on its way out with its checkpoint saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _record) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            if signal.getsignal(s) is _record:  # the loop ignores them itself after a stop
                signal.signal(s, signal.SIG_IGN if _received else handler)


def received_while_starting() -> bool:
    """Whether a stop signal came while the stage was starting."""
    return bool(_received)


def _record(signum: int, frame) -> None:
    if not _received:
        log.warning("received %s while starting: saving a checkpoint after the first iteration",
                    signal.Signals(signum).name)
    _received.append(signal.Signals(signum).name)
