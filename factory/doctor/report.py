"""The doctor's outputs: doctor.json, doctor.md and the table printed to the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from factory.doctor.checks import Result, verdict
from factory.io import atomic_write_text


def summary(results: list[Result]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("pass", "fail", "skip")}
    word = "PASS" if verdict(results) else "FAIL"
    return f"{word}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"


def table(results: list[Result]) -> str:
    """A Markdown table (also what the terminal shows)."""
    rows = ["| check | status | figure | seconds |", "|---|---|---|---|"]
    rows += [f"| {r.name} | {r.status} | {r.figure.replace('|', '/')} | {r.seconds:.1f} |" for r in results]
    return "\n".join(rows)


def write(out_dir: Path, tier: str, command: str, results: list[Result], environment: dict) -> None:
    """Both files, atomically (called after every check, so a cut-off window still leaves its results)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"tier": tier, "command": command, "passed": verdict(results), "summary": summary(results),
              "environment": environment, "checks": [r.to_dict() for r in results]}
    atomic_write_text(out_dir / "doctor.json", json.dumps(record, indent=2) + "\n")
    env = ", ".join(f"{k} {v}" for k, v in environment.items())
    text = (f"# doctor: {tier} tier\n\n`{command}`\n\n{env}\n\n{table(results)}\n\n{summary(results)}\n\n"
            + "\n".join(f"- **{r.name}**: {r.proves}" for r in results) + "\n")
    atomic_write_text(out_dir / "doctor.md", text)
