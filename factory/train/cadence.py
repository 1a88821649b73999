"""When a periodic part of the training loop is due: logging, validation, checkpoint saves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Every:
    """Due at every multiple of `interval` (0: never) and, when `last` is given, at that final iteration too."""

    interval: int
    last: int | None = None

    def due(self, iteration: int) -> bool:
        return bool(self.interval) and (iteration % self.interval == 0 or iteration == self.last)
