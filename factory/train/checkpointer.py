"""A training run's checkpoints: which saves run in the background, when they are committed, and the last one.

With `checkpoint.async_save` a periodic save costs the step loop only its plan and a snapshot of the tensors;
the files are written by a thread of this process while training goes on, and the save is committed (published,
tracker moved, retention applied) at the first step after every rank has written its files. One save is in
flight at a time: a save that comes due while one is still being written waits for it. The final save and a
save asked for by a stop signal or a planned restart are written before the loop moves on: any background
save is committed first, then the current iteration is saved, so the run always ends on its own last
iteration. A run that fails leaves a background save uncommitted (`.partial`, removed by the next start).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from factory.train.cadence import Every
from factory.train.checkpoint_save import PendingSave
from factory.train.config import CheckpointConfig
from factory.train.state import TrainState

log = logging.getLogger("factory.train.checkpoint")

Write = Callable[[TrainState, bool], PendingSave]
"""(state, in the background?) -> the save of that state, its files written or being written."""


class Checkpointer:
    def __init__(self, config: CheckpointConfig, write: Write):
        self.config, self.write = config, write
        self.pending: PendingSave | None = None
        self.started = 0.0

    def due(self, iteration: int) -> bool:
        """A periodic save (the last one and a stop signal's are asked for by the loop)."""
        return Every(self.config.save_interval).due(iteration)

    def save(self, state: TrainState, final: bool) -> float:
        """Save `state`: in the background when `async_save` and not `final`, else now; returns the seconds the
        step loop waited (an earlier background save still being written included)."""
        waited = time.perf_counter()
        self.finish()
        self.started = time.perf_counter()
        pending = self.write(state, self.config.async_save and not final)
        if pending.thread is None:
            self._commit(pending)
        else:
            self.pending = pending
        waited = time.perf_counter() - waited
        log.info("checkpoint: iteration %d: the step loop waited %.2f s%s", state.iteration, waited,
                 " (written in the background)" if self.pending is not None else "")
        return waited

    def poll(self) -> None:
        """Commit the background save once every rank has written it (collective: every rank calls it each step)."""
        if self.pending is not None and self.pending.written_everywhere():
            self.finish()

    def finish(self) -> None:
        """Wait for a background save, if any, and commit it (collective)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self._commit(pending)
            log.info("checkpoint: iteration %d committed %.2f s after its save began", pending.iteration,
                     time.perf_counter() - self.started)

    def abandon(self) -> None:
        """After a failure: let this rank's writer finish its files, commit nothing (the next start removes them)."""
        if self.pending is not None and self.pending.thread is not None:
            self.pending.thread.join()
        self.pending = None

    def _commit(self, pending: PendingSave) -> None:
        pending.commit(self.config.keep_last, self.config.keep_every, self.config.keep_every_optimizer)
