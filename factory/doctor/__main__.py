"""`python -m factory.doctor [--tier cpu|gpu|auto] [--out DIR] [--minutes N] [--data DIR]`: prove this node."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

from factory.doctor.workspace import check_prepared
from factory.errors import ConfigError, report as report_error
from factory.process_exit import exit_process
from factory.runtime.capabilities import installed_te_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.doctor", description=__doc__)
    parser.add_argument("--tier", choices=("cpu", "gpu", "auto"), default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/doctor"))
    parser.add_argument("--minutes", type=float, default=None, help="time budget; later checks are skipped")
    parser.add_argument("--data", type=Path, default=None, help="a prepared folder (tokenizer/, pack/)")
    parser.add_argument("--list", action="store_true", help="print the tier's checks and time budgets; run nothing")
    args = parser.parse_args(argv)
    if args.list:
        return _list(args.tier)

    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        # A budget of 0 or less would skip every check and still print PASS.
        return report_error(ConfigError(f"--minutes {args.minutes:g}: expected a positive number of minutes"))
    if args.data is not None:
        try:
            check_prepared(args.data)
        except ConfigError as e:
            return report_error(e)
    from factory.doctor import report
    from factory.doctor.checks import SKIP, DoctorContext, Result, pending, run_checks, verdict
    from factory.doctor.tiers import TIERS
    from factory.runtime.runtime import cuda_device_count

    has_cuda = cuda_device_count() > 0
    tier = args.tier if args.tier != "auto" else ("gpu" if has_cuda else "cpu")
    shapes, checks = TIERS[tier]
    command = "python -m factory.doctor " + shlex.join(argv if argv is not None else sys.argv[1:])
    environment = _environment(args.minutes)
    if tier == "gpu" and not has_cuda:
        results = [Result(c.name, SKIP, "skipped: no CUDA device", 0.0, c.proves, c.minutes) for c in checks]
    else:
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        report.write(args.out, tier, command, pending(checks), environment)  # a run cut off keeps a record
        with tempfile.TemporaryDirectory(dir=args.out, prefix="work-") as work:
            context = DoctorContext(tier, shapes, Path(work), args.data)
            results = run_checks(checks, context, deadline,
                                 lambda done: report.write(args.out, tier, command, done, environment))
    report.write(args.out, tier, command, results, environment)
    print(report.table(results))
    print(report.summary(results))
    return 0 if verdict(results) else 1


def _list(tier: str) -> int:
    from factory.doctor.tiers import TIERS

    checks = TIERS["gpu" if tier == "auto" else tier][1]
    for c in checks:
        devices = f", {c.devices} GPUs" if c.devices > 1 else ""
        print(f"[{c.minutes:g} min{devices}] {c.name}: {c.proves}")
    print(f"{len(checks)} checks, budgets adding up to {sum(c.minutes for c in checks):g} min "
          f"({sum(c.minutes for c in checks if c.devices == 1):g} min on one GPU)")
    return 0


def _environment(minutes: float | None) -> dict:
    """Versions and the device the figures were measured with."""
    import importlib.metadata
    import platform

    import torch

    from factory.runtime.runtime import cuda_device_count, device_description

    try:
        megatron = importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        megatron = "not installed"
    te = installed_te_version()
    env = {"python": platform.python_version(), "torch": torch.__version__, "megatron-core": megatron,
           "transformer engine": ".".join(map(str, te)) if te else "not installed",
           "CUDA devices": cuda_device_count()}
    if device := device_description():
        env["device"] = device
    env["time budget"] = f"{minutes:g} min" if minutes else "none"
    return env


if __name__ == "__main__":
    exit_process(main())
