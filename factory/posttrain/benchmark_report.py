"""Markdown for the eval stage's benchmark results (eval/report.md and the run report share these tables)."""

from __future__ import annotations

from typing import Any

NEAR_CHANCE = 2.0
"""A score within this many standard errors of chance is reported as near chance."""


def number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or value == "n/a" else f"{value:.{digits}f}"


def verdict(score: dict[str, Any]) -> str:
    """How a score stands against its baselines: within NEAR_CHANCE standard errors of uniform guessing is
    `near chance`, of always giving the most frequent answer `majority-class level`."""
    value, stderr = score["value"], score["stderr"] or 0.0
    if value is None or score["chance"] is None:
        return ""
    if abs(value - score["chance"]) <= NEAR_CHANCE * stderr:
        return "near chance"
    if score.get("majority") is not None and abs(value - score["majority"]) <= NEAR_CHANCE * stderr:
        return "majority-class level"
    return "above chance" if value > score["chance"] else "below chance"


def harness_table(scores: list[dict[str, Any]]) -> list[str]:
    lines = ["| task | metric | score | ± stderr | examples | shots | chance | majority class | vs chance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        lines.append(f"| {s['task']} | {s['metric']} | {number(s['value'])} | {number(s['stderr'])} | {s['examples']} "
                     f"| {s['num_fewshot']} | {number(s['chance'])} | {number(s['majority'])} | {verdict(s)} |")
    return lines + [""]


def mt_bench_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"Judge: `{summary['judge_model']}`; {summary['rated']} of {summary['judged']} judgements gave a "
             f"rating (1-10; FastChat's single-answer grading, unrated ones left out of the means).", "",
             "| category | score |", "|---|---|"]
    lines += [f"| {c} | {number(v, 2)} |" for c, v in summary["categories"].items()]
    lines += [f"| turn 1 | {number(summary['turn1'], 2)} |", f"| turn 2 | {number(summary['turn2'], 2)} |",
              f"| **overall** | **{number(summary['overall'], 2)}** |", ""]
    return lines


def checkpoint_table(rows: list[dict[str, Any]]) -> list[str]:
    metrics = [(s["task"], s["metric"]) for s in rows[0]["scores"]] if rows else []
    lines = ["| series | iteration | tokens | " + " | ".join(f"{t} {m}" for t, m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for r in rows:
        cells = [f"{number(s['value'])} ± {number(s['stderr'])}" for s in r["scores"]]
        lines.append(f"| {r['label']} | {r['iteration']} | {r['tokens']:,} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """The benchmark sections of eval/report.md (empty when none ran)."""
    lines: list[str] = []
    if report.get("harness"):
        lines += ["## JGLUE (lm-evaluation-harness)", ""] + harness_table(report["harness"])
    if report.get("mt_bench"):
        lines += ["## Japanese MT-Bench", ""] + mt_bench_lines(report["mt_bench"])
    if report.get("checkpoints"):
        lines += ["## Checkpoints by iteration", ""] + checkpoint_table(report["checkpoints"])
    return lines
