"""`python -m factory.report --config FILE [key=value ...]`: (re)write a run's report from its artifacts."""

from __future__ import annotations

import argparse
import sys

from factory.errors import FactoryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.report", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--config", required=True, help="the run's YAML config (its run.dir is read)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = parser.parse_args(argv)
    from factory.config import load_config
    from factory.report import write_report

    try:
        print(f"report: {write_report(load_config(args.config, args.overrides))}")
    except FactoryError as e:
        for line in e.lines():
            print(f"{e.label}: {line}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
