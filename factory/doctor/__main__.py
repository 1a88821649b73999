"""`python -m factory.doctor [--tier cpu|gpu|auto] [--out DIR] [--minutes N] [--data DIR]`: prove this node."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.doctor", description=__doc__)
    parser.add_argument("--tier", choices=("cpu", "gpu", "auto"), default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/doctor"))
    parser.add_argument("--minutes", type=float, default=None, help="time budget; later checks are skipped")
    parser.add_argument("--data", type=Path, default=None, help="a prepared folder (tokenizer/, pack/)")
    args = parser.parse_args(argv)
    from factory.doctor.workspace import check_prepared
    from factory.errors import ConfigError, report as report_error

    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        # A budget of 0 or less would skip every check and still print PASS.
        return report_error(ConfigError(f"--minutes {args.minutes:g}: expected a positive number of minutes"))
    if args.data is not None:
        try:
            check_prepared(args.data)
        except ConfigError as e:
            return report_error(e)
    import torch

    from factory.doctor import report
    from factory.doctor.checks import SKIP, DoctorContext, Result, run_checks, verdict
    from factory.doctor.tiers import TIERS

    from factory.runtime.runtime import cuda_device_count

    has_cuda = cuda_device_count() > 0
    tier = args.tier if args.tier != "auto" else ("gpu" if has_cuda else "cpu")
    shapes, checks = TIERS[tier]
    command = "python -m factory.doctor " + shlex.join(argv if argv is not None else sys.argv[1:])
    environment = {"python": sys.version.split()[0], "torch": torch.__version__}
    if tier == "gpu" and not has_cuda:
        results = [Result(c.name, SKIP, "skipped: no CUDA device", 0.0, c.proves) for c in checks]
    else:
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.out, prefix="work-") as work:
            context = DoctorContext(tier, shapes, Path(work), args.data)
            results = run_checks(checks, context, deadline,
                                 lambda done: report.write(args.out, tier, command, done, environment))
    report.write(args.out, tier, command, results, environment)
    print(report.table(results))
    print(report.summary(results))
    return 0 if verdict(results) else 1


if __name__ == "__main__":
    sys.exit(main())
