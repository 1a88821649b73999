"""`python -m factory.report --config FILE [key=value ...]`: (re)write a run's report from its artifacts."""

from __future__ import annotations

import argparse
import sys

from factory.config import load_config
from factory.errors import FactoryError, report
from factory.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.report", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--config", required=True, help="the run's YAML config (its run.dir is read)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = parser.parse_args(argv)
    try:
        print(f"report: {write_report(load_config(args.config, args.overrides))}")
    except FactoryError as e:
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
