"""`python -m factory.evaldata {fetch,verify,path} [--dir DIR]`: install, check or locate the eval data folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from factory.errors import FactoryError, OutputError, VerificationError, report
from factory.evaldata.install import UPSTREAM, Mirror, Upstream, absent, fetch, verify
from factory.evaldata.location import ENV_BASE_URL, ENV_DIR, default_dir
from factory.io import os_error_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m factory.evaldata", description=__doc__.split(":", 1)[1].strip())
    verbs = parser.add_subparsers(dest="verb", required=True)
    where = f"the eval data folder (default: ${ENV_DIR}, else $XDG_CACHE_HOME/jp-model-factory/eval-data)"
    get = verbs.add_parser("fetch", help="download JGLUE v1.3 and Japanese MT-Bench, checked against pinned sha256s")
    get.add_argument("--dir", type=Path, help=where)
    source = get.add_mutually_exclusive_group()
    source.add_argument("--from", dest="mirror", type=Path, metavar="DIR",
                        help="install from a local copy in the same layout (offline machines)")
    source.add_argument("--base-url", default=os.environ.get(ENV_BASE_URL) or UPSTREAM,
                        help=f"download root standing in for {UPSTREAM} (env {ENV_BASE_URL})")
    for name, text in (("verify", "check every file against the pinned checksums"), ("path", "print the folder")):
        verbs.add_parser(name, help=text).add_argument("--dir", type=Path, help=where)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = args.dir or default_dir()
    try:
        if args.verb == "path":
            print(folder)
        elif args.verb == "fetch":
            from factory.logs import setup_logging

            setup_logging()
            print(fetch(folder, Mirror(args.mirror) if args.mirror else Upstream(args.base_url)).line())
        else:
            problems = verify(folder)
            if problems:
                raise VerificationError("\n".join(problems))
            optional = f" (optional, absent: {', '.join(absent(folder))})" if absent(folder) else ""
            print(f"eval data: {folder}: every file matches its pinned checksums{optional}")
    except FactoryError as e:
        return report(e)
    except OSError as e:  # an unwritable folder, a full disk, an unreadable mirror
        return report(OutputError(os_error_line(e, folder)))
    except KeyboardInterrupt:
        print("error: interrupted (run the fetch again to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
