"""Markdown for the eval stage's benchmark results (eval/report.md and the run report share these tables)."""

from __future__ import annotations

from typing import Any

from factory.posttrain.benchmark_config import LEADERBOARD
from factory.posttrain.jglue import TASKS

NEAR_CHANCE = 2.0
"""A score within this many standard errors of chance is reported as near chance."""
PROTOCOL_HEADINGS = {
    LEADERBOARD: "lm-evaluation-harness: its own japanese_leaderboard task definitions (log-likelihood of each "
                 "choice; JSQuAD generated), JSTS the factory's own",
    "llm-jp-eval": "llm-jp-eval protocol: generation, exact match of the first paragraph (NFKC), its instructions "
                   "and few-shot format",
}


def number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or value == "n/a" else f"{value:.{digits}f}"


def score_label(score: dict[str, Any]) -> str:
    """`jcommonsenseqa acc`, or `jcommonsenseqa exact_match (llm-jp-eval)` for the second protocol."""
    protocol = score.get("protocol", LEADERBOARD)
    return f"{score['task']} {score['metric']}" + ("" if protocol == LEADERBOARD else f" ({protocol})")


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


def harness_table(scores: list[dict[str, Any]], versions: dict[str, str] | None = None) -> list[str]:
    """One table per protocol (with the version it followed), then each task's cut prompts."""
    lines: list[str] = []
    for protocol in dict.fromkeys(s.get("protocol", LEADERBOARD) for s in scores):
        rows = [s for s in scores if s.get("protocol", LEADERBOARD) == protocol]
        version = [f"Followed: {versions[protocol]}.", ""] if versions and protocol in versions else []
        lines += [f"### {PROTOCOL_HEADINGS.get(protocol, protocol)}", "", *version,
                  "| task | metric | score | ± stderr | examples | shots | chance | majority class | vs chance |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in rows:
            shots = f"{s['num_fewshot']} from {s['fewshot_split']}" if s["num_fewshot"] else "0"
            lines.append(f"| {s['task']} | {s['metric']} | {number(s['value'])} | {number(s['stderr'])} | "
                         f"{s['examples']} | {shots} | {number(s['chance'])} | {number(s['majority'])} | "
                         f"{verdict(s)} |")
        cut = {s["task"]: s for s in rows if s.get("prompts")}
        lines += [""] + [f"- {truncation(s)}" for s in cut.values()] + ([""] if cut else [])
    return lines


def truncation(score: dict[str, Any]) -> str:
    """`JNLI: 600 of 600 prompts cut to 128 tokens`."""
    title = TASKS[score["task"]].title if score["task"] in TASKS else score["task"]
    return f"{title}: {score['prompts_cut']} of {score['prompts']} prompts cut to {score['context']} tokens"


def mt_bench_lines(summary: dict[str, Any]) -> list[str]:
    samples = summary.get("samples", 1)
    spread = summary.get("overall_std")
    overall = number(summary["overall"], 2) + (f" ± {number(spread, 2)}" if samples > 1 else "")
    lines = [f"Judge: `{summary['judge_model']}` with the prompts of `{summary.get('judge_prompts', 'FastChat')}`; "
             f"{summary['rated']} of {summary['judged']} judgements gave a rating (1-10; FastChat's single-answer "
             f"grading, unrated ones left out of the means). {samples} answer(s) per question at FastChat's "
             f"temperature per category" + ("; ± is the standard deviation of the overall score across them"
                                           if samples > 1 else "") + ".", ""]
    if summary.get("refused_turns"):
        lines += [f"{summary['refused_turns']} turn(s) not answered: their prompt did not fit the model's context "
                  "(prompts are never cut).", ""]
    lines += ["| category | score |", "|---|---|"]
    lines += [f"| {c} | {number(v, 2)} |" for c, v in summary["categories"].items()]
    lines += [f"| turn 1 | {number(summary['turn1'], 2)} |", f"| turn 2 | {number(summary['turn2'], 2)} |",
              f"| **overall** | **{overall}** |", ""]
    return lines


def checkpoint_table(rows: list[dict[str, Any]]) -> list[str]:
    labels = [score_label(s) for s in rows[0]["scores"]] if rows else []
    lines = ["| series | iteration | tokens | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    for r in rows:
        cells = [f"{number(s['value'])} ± {number(s['stderr'])}" for s in r["scores"]]
        lines.append(f"| {r['label']} | {r['iteration']} | {r['tokens']:,} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """The benchmark sections of eval/report.md (empty when none ran)."""
    lines: list[str] = []
    if report.get("harness"):
        lines += ["## JGLUE", ""] + harness_table(report["harness"], report.get("harness_protocols"))
    if report.get("mt_bench"):
        lines += ["## Japanese MT-Bench", ""] + mt_bench_lines(report["mt_bench"])
    if report.get("checkpoints"):
        lines += ["## Checkpoints by iteration", ""] + checkpoint_table(report["checkpoints"])
    return lines
