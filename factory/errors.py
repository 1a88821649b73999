"""Domain exceptions, caught once by the CLI and printed as one line each."""

import sys
from pathlib import Path
from typing import Iterable


class FactoryError(Exception):
    """Base of every error the factory reports to a user; exit code 1."""

    exit_code = 1
    label = "error"
    """How the CLI prefixes the message ("stopped" for deliberate, resumable stops)."""

    def lines(self) -> list[str]:
        """The message as the lines the CLI prints."""
        return str(self).splitlines() or [type(self).__name__]


def report(e: FactoryError) -> int:
    """Print `e` as the CLIs do (one `label: line` per line on stderr); returns its exit code."""
    for line in e.lines():
        print(f"{e.label}: {line}", file=sys.stderr)
    return e.exit_code


class ConfigError(FactoryError):
    """A config or command line that cannot run; exit code 2. Holds every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class CheckpointError(FactoryError):
    """A checkpoint that is missing, malformed, or does not match the config."""


class DataError(FactoryError):
    """Input data that is missing or malformed."""


class VerificationError(FactoryError):
    """A transform whose result does not match its source; nothing was written."""


class OutputError(FactoryError):
    """A file or folder that cannot be read or written (permission, disk full, read-only, not a folder)."""


def missing_inputs(owner: str, paths: Iterable[Path]) -> list[str]:
    """One problem line naming every path of `owner` that does not exist; none when all exist."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    return [f"{owner}: input not found: {', '.join(missing)}"] if missing else []
