"""The doctor's outputs: doctor.json, doctor.md and the table printed to the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from factory.doctor.checks import PENDING, Result, verdict
from factory.io import atomic_write_text

ESCAPED_PIPE = "\\|"
"""A `|` inside a Markdown table cell (figures such as max |dlogits|)."""


def summary(results: list[Result]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip", PENDING)}
    word = "INCOMPLETE" if counts[PENDING] else "PASS" if verdict(results) else "FAIL"
    line = f"{word}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
    return line + (f", {counts[PENDING]} not reached" if counts[PENDING] else "")


def table(results: list[Result]) -> str:
    """A Markdown table (also what the terminal shows): status, the figure measured, seconds against the budget."""
    rows = ["| check | status | figure | seconds | budget (min) |", "|---|---|---|---|---|"]
    rows += [f"| {r.name} | {r.status.upper()} | {r.figure.replace('|', ESCAPED_PIPE)} | {r.seconds:.1f} "
             f"| {r.minutes:g} |" for r in results]
    return "\n".join(rows)


def write(out_dir: Path, tier: str, command: str, results: list[Result], environment: dict) -> None:
    """Both files, atomically (called before the first check and after every one, so a run cut off still leaves
    its results, the rest marked as not reached)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"tier": tier, "command": command, "passed": verdict(results), "summary": summary(results),
              "environment": environment, "checks": [r.to_dict() for r in results]}
    atomic_write_text(out_dir / "doctor.json", json.dumps(record, indent=2) + "\n")
    env = "\n".join(f"- {k}: {v}" for k, v in environment.items())
    budget = sum(r.minutes for r in results)
    spent = sum(r.seconds for r in results) / 60
    text = (f"# doctor: {tier} tier, {summary(results)}\n\n`{command}`\n\n{env}\n\n"
            f"Checks took {spent:.1f} min against budgets adding up to {budget:g} min (a check whose budget no longer "
            f"fits the run's --minutes is skipped; one needing more GPUs than the node has is skipped).\n\n"
            f"{table(results)}\n\n{summary(results)}\n\n## What a pass of each check proves\n\n"
            + "\n".join(f"- **{r.name}**: {r.proves}" for r in results) + "\n")
    atomic_write_text(out_dir / "doctor.md", text)
