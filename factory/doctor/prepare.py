"""`python -m factory.doctor.prepare DIR [--tier cpu|gpu]`: write the folder `--data DIR` reads (tokenizer/, pack/).

A bare GPU node lacks MeCab and pyarrow, which the tokenizer and pack stages need; this runs on a machine with
the project's environment and the folder travels with the working tree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from factory.doctor import workspace
from factory.doctor.shapes import CPU, GPU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.doctor.prepare", description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--tier", choices=("cpu", "gpu"), default="gpu", help="whose shapes (vocabulary, documents)")
    args = parser.parse_args(argv)

    shapes = GPU if args.tier == "gpu" else CPU
    root = workspace.build(args.dir, shapes.vocab_size, shapes.documents)
    print(f"prepared {root}: tokenizer of {workspace.tokenizer_size(root)} ids; "
          f"run python -m factory.doctor --tier {args.tier} --data {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
