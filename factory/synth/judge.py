"""Preference pairs for DPO: two samples of one prompt, judged by an LLM into prompt/chosen/rejected."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from factory.endpoints.client import ChatClient, bounded_map
from factory.jsonl_log import JsonlLog, record_id
from factory.synth.config import SynthConfig
from factory.synth.prompts import JUDGE, judge_messages

_VERDICT = re.compile(r"\[\[([AB])\]\]")
UNDECIDED_FIELDS = {"prompt": str, "group": str, "judgement": str}
PAIR_FIELDS = {**UNDECIDED_FIELDS, "chosen": str, "rejected": str}
"""What the training data reads from each judged pair; a record without them is judged again."""


def parse_verdict(text: str) -> str | None:
    """'A' or 'B' when the judge named exactly one winner with [[A]] / [[B]]; None otherwise."""
    found = set(_VERDICT.findall(text))
    return found.pop() if len(found) == 1 else None


def candidate_pairs(samples: JsonlLog) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Samples 0 and 1 of each prompt group that has both, in file order of groups."""
    groups: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for rec in samples.records():
        if rec["sample"] < 2:  # only the first two samples of a prompt are ever paired
            groups[rec["group"]][rec["sample"]] = rec
    return [(g[0], g[1]) for g in groups.values() if len(g) == 2]


def judge_pairs(synth_config: SynthConfig, client: ChatClient, samples: JsonlLog, pairs_out: JsonlLog,
                undecided_out: JsonlLog) -> dict[str, int]:
    """Judge every candidate pair not judged yet; decided pairs go to `pairs_out`, the rest (with why)
    to `undecided_out`. Returns counts."""
    judge_model = synth_config.preference.judge_model or synth_config.model
    todo = []
    done = pairs_out.done_ids() | undecided_out.done_ids()
    candidates = candidate_pairs(samples)
    for a, b in candidates:
        pid = record_id(a["group"], JUDGE.name, judge_model)
        if pid not in done:
            # Alternate which sample is shown first, so the judge's position bias does not pick a side.
            todo.append((pid, (b, a) if int(pid[-1], 16) % 2 else (a, b)))

    def call(item: tuple[str, tuple[dict, dict]]) -> str:
        _, (first, second) = item
        messages = judge_messages(first["prompt"], first["text"], second["text"])
        choices = ["[[A]]", "[[B]]"] if synth_config.preference.verdict_only else None
        return client.complete(judge_model, messages, 0.0, synth_config.preference.max_tokens, choices=choices)

    decided = undecided = 0
    for (pid, (first, second)), verdict_text in bounded_map(call, todo, synth_config.concurrency):
        verdict = parse_verdict(verdict_text)
        base = {"id": pid, "prompt": first["prompt"], "group": first["group"], "task": first["task"],
                "persona": first.get("persona"), "seed_id": first.get("seed_id"), "model": first.get("model"),
                "judge_model": judge_model, "judge_template": JUDGE.name, "judgement": verdict_text}
        if verdict is None:
            undecided_out.append({**base, "reason": "judge named no single winner ([[A]] or [[B]])"})
            undecided += 1
            continue
        chosen, rejected = (first, second) if verdict == "A" else (second, first)
        pairs_out.append({**base, "chosen": chosen["text"], "rejected": rejected["text"],
                          "chosen_id": chosen["id"], "rejected_id": rejected["id"]})
        decided += 1
    return {"pairs_candidates": len(candidates), "pairs_resumed": len(candidates) - len(todo),
            "pairs_decided": decided, "pairs_undecided": undecided,
            "pairs_skipped_unusable": pairs_out.skipped + undecided_out.skipped}
