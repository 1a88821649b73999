"""The run report: `<run.dir>/report/report.md` and its PNG figures, every figure read from artifacts."""

from __future__ import annotations

import datetime
from pathlib import Path

from factory.config_base import CoreConfig
from factory.errors import OutputError
from factory.io import atomic_write_text, os_error_line
from factory.report.sections import SECTIONS
from factory.report.sources import collect


def write_report(cfg: CoreConfig) -> Path:
    """Write report.md and its figures for the run in `cfg.run.dir`; returns the report's path. A folder that
    cannot be written is one OutputError line."""
    out = cfg.run.dir / "report"
    try:
        return _write(cfg, out)
    except OSError as e:
        raise OutputError(f"report: {os_error_line(e, out)}") from None


def _write(cfg: CoreConfig, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    arts = collect(cfg.run.dir)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Run report: {cfg.run.name}", "", f"Run folder `{cfg.run.dir}`; written {when} from its "
             "manifests, metrics logs and stage reports.", ""]
    for section in SECTIONS:
        lines += section(arts, out)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
