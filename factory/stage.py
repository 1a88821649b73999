"""`python -m factory.stage VERB --config FILE [key=value ...] [--dry-run]`: one verb per registered stage."""

from __future__ import annotations

import argparse
import sys

from factory import registry
from factory.config import load_config
from factory.errors import FactoryError, report
from factory.logs import setup_logging
from factory.process_exit import exit_process
from factory.runner import run_stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m factory.stage",
        description="Run one stage of the Japanese-first LLM factory.",
        epilog="Each verb takes --config FILE, dotted key=value overrides and --dry-run.")
    verbs = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in registry.CHAIN:
        sub = verbs.add_parser(stage.name, help=stage.help, description=stage.help)
        sub.add_argument("--config", required=True, help="YAML config (see configs/)")
        sub.add_argument("--dry-run", action="store_true",
                         help="print the resolved config, plan and parameter counts; run nothing")
        sub.add_argument("--log-level", default="INFO")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load_config(args.config, args.overrides)
        run_stage(registry.stage(args.stage), cfg, dry_run=args.dry_run)
    except FactoryError as e:
        return report(e)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    exit_process(main())
