"""Values in `#SBATCH` lines as sbatch reads them. sbatch parses these lines itself, not with the shell: it
splits them at blanks, ends them at an unquoted `#`, takes double or single quotes and a backslash escape
anywhere, and expands `%` patterns in file names (measured against slurmctld in tests/launch)."""

from __future__ import annotations

import re
from pathlib import Path

_PLAIN = re.compile(r"[\w@%+=:,./-]+")
_BLANK = re.compile(r"[\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_plain(value: str) -> bool:
    """Whether `value` needs no quoting in an #SBATCH line or a shell command."""
    return _PLAIN.fullmatch(value) is not None


def word(value: str) -> str:
    """`value` as one word of an #SBATCH line: as it is when plain, else double-quoted with `\\` and `"`
    escaped."""
    if is_plain(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log_file(folder: str | Path, pattern: str) -> str:
    """An `--output` file name: `folder` with its `%` doubled (sbatch would expand `%j` in it), then `pattern`
    (e.g. `%x-%j.out`), as one #SBATCH word."""
    return word(str(folder).replace("%", "%%") + "/" + pattern)


def name_problem(value: str) -> str | None:
    """Why `value` cannot be a Slurm partition, account, QOS, reservation or constraint (none holds a blank:
    sbatch answers "invalid partition specified"), or None."""
    return "a Slurm name cannot contain spaces or control characters" if _BLANK.search(value) else None


def line_problem(value: str) -> str | None:
    """Why `value` cannot sit in an #SBATCH line at all (a line break or control character ends it), or None."""
    return "cannot contain a line break or control character" if _CONTROL.search(value) else None
