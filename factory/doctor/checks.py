"""The check list framework: each check runs, is timed, and ends as pass, fail or skip with the figure it measured."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

PASS, FAIL, SKIP = "pass", "fail", "skip"


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


@dataclass
class Result:
    name: str
    status: str
    figure: str
    seconds: float
    proves: str = ""

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
        return Result(check.name, SKIP, f"skipped: needs {', '.join(missing)}", 0.0, check.proves)
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
    return Result(check.name, status, figure, round(time.perf_counter() - start, 2), check.proves)


def run_checks(checks: list[Check], context: DoctorContext, deadline: float | None = None,
               on_result: Callable[[list[Result]], None] | None = None) -> list[Result]:
    """Run every check in order; once `deadline` (time.monotonic) has passed, the rest are skipped."""
    results: dict[str, Result] = {}
    for check in checks:
        if deadline is not None and time.monotonic() > deadline:
            results[check.name] = Result(check.name, SKIP, "skipped: time budget spent", 0.0, check.proves)
        else:
            log.info("doctor: %s ...", check.name)
            results[check.name] = run_one(check, context, results)
            log.info("doctor: %s %s (%s)", check.name, results[check.name].status, results[check.name].figure)
        if on_result:
            on_result(list(results.values()))
    return list(results.values())


def verdict(results: list[Result]) -> bool:
    """True when every check that ran passed."""
    return all(r.status == PASS for r in results if r.status != SKIP)
