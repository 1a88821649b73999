"""The check list framework: each check runs, is timed, and ends as pass, fail or skip with the figure it measured."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from factory.runtime.runtime import cuda_device_count

log = logging.getLogger(__name__)

PASS, FAIL, SKIP, PENDING = "pass", "fail", "skip", "pending"
"""PENDING marks a check not yet reached in the records written while the doctor runs (a run cut off keeps it)."""


class CheckFailed(Exception):
    """A check measured something outside its bound; the message is the figure."""


class CheckSkipped(Exception):
    """A check cannot run here (no CUDA device, time budget spent); the message is the reason."""


@dataclass(frozen=True)
class Check:
    name: str
    proves: str
    """One line: what a pass shows."""
    run: Callable[["DoctorContext"], str]
    """Returns the figure on a pass; raises CheckFailed / CheckSkipped otherwise."""
    requires: tuple[str, ...] = ()
    """Checks whose pass this one builds on (it is skipped when one of them did not pass)."""
    minutes: float = 1.0
    """Its time budget on the tier it runs in: started only with this much of the doctor's `--minutes` left."""
    devices: int = 1
    """Processes it runs (one per GPU on the GPU tier, where it is skipped on a node with fewer)."""


@dataclass
class Result:
    name: str
    status: str
    figure: str
    seconds: float
    proves: str = ""
    minutes: float = 0.0
    """The check's time budget."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DoctorContext:
    """What checks share: the tier's shapes, a scratch folder, and what earlier checks produced."""

    tier: str
    shapes: object
    work_dir: object
    data_dir: object = None
    artifacts: dict = field(default_factory=dict)
    """Paths earlier checks wrote (the pretrain checkpoint, the upcycled one) by name."""


def run_one(check: Check, context: DoctorContext, results: dict[str, Result]) -> Result:
    """Run `check`; any exception other than CheckSkipped is a fail with its first line as the figure."""
    missing = [name for name in check.requires if results.get(name) is None or results[name].status != PASS]
    if missing:
        return Result(check.name, SKIP, f"skipped: needs {', '.join(missing)}", 0.0, check.proves, check.minutes)
    start = time.perf_counter()
    try:
        status, figure = PASS, check.run(context)
    except CheckSkipped as e:
        status, figure = SKIP, f"skipped: {e}"
    except CheckFailed as e:
        status, figure = FAIL, str(e)
    except Exception as e:  # a crash is a verdict too: the doctor reports it and goes on
        log.exception("doctor: check %s raised", check.name)
        first = (str(e).strip().splitlines() or [""])[0]
        status, figure = FAIL, f"{type(e).__name__}: {first}"[:300]
    return Result(check.name, status, figure, round(time.perf_counter() - start, 2), check.proves, check.minutes)


def _cannot_start(check: Check, context: DoctorContext, deadline: float | None) -> str | None:
    """Why `check` is skipped before it starts: too few GPUs on the GPU tier, or its budget no longer fits."""
    found = cuda_device_count()
    if context.shapes.device == "cuda" and found < check.devices:
        return f"needs {check.devices} CUDA devices, found {found}"
    left = (deadline - time.monotonic()) / 60 if deadline is not None else None
    if left is not None and check.minutes > left:
        return f"its budget of {check.minutes:g} min exceeds the {max(left, 0):.1f} min left"
    return None


def pending(checks: list[Check]) -> list[Result]:
    """Records of checks not yet run."""
    return [Result(c.name, PENDING, "not reached", 0.0, c.proves, c.minutes) for c in checks]


def run_checks(checks: list[Check], context: DoctorContext, deadline: float | None = None,
               on_result: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """Run every check in order; one whose budget no longer fits before `deadline` (time.monotonic) is skipped.
    `on_result` gets the results so far and the checks still to come (as PENDING) after each check."""
    results: dict[str, Result] = {}
    for i, check in enumerate(checks):
        reason = _cannot_start(check, context, deadline)
        if reason:
            results[check.name] = Result(check.name, SKIP, f"skipped: {reason}", 0.0, check.proves, check.minutes)
        else:
            log.info("doctor: %s ...", check.name)
            results[check.name] = run_one(check, context, results)
            log.info("doctor: %s %s (%s)", check.name, results[check.name].status, results[check.name].figure)
        if on_result:
            on_result(list(results.values()) + pending(checks[i + 1:]))
    return list(results.values())


def verdict(results: list[Result]) -> bool:
    """True when every check ran or was skipped, and every one that ran passed."""
    return all(r.status in (PASS, SKIP) for r in results)
