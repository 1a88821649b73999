"""SFT and DPO datasets: read any records file or `datasets` folder, detect the layout, normalize, check, mix.

Every SFT row becomes a `messages` conversation (ShareGPT `from/value` is renamed, a prompt/completion
pair becomes one user turn and one assistant turn) so that all datasets share the chat template and the
assistant-only loss. DPO rows keep prompt/chosen/rejected; plain strings turn into one-turn conversations
when another dataset of the mixture is conversational. Rows that are malformed or break a rule of
factory/posttrain/rules.py are counted per rule against `<stage>.max_error_rate`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from factory.errors import DataError
from factory.posttrain.config import DatasetSpec
from factory.posttrain.rules import BASE_ROLES, RowError, RowTally, check_conversation, check_lengths, token_length
from factory.records import read_records

log = logging.getLogger(__name__)

# Columns each layout needs, in detection order.
LAYOUTS = {"messages": ("messages",), "sharegpt": ("conversations",),
           "prompt_completion": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}
EXPECTED = {"sft": "messages | conversations (ShareGPT from/value) | prompt+completion",
            "dpo": "prompt+chosen+rejected"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "model": "assistant"}


@dataclass(frozen=True)
class RowPolicy:
    """How rows are checked: the share that may break a rule, the roles the chat template renders, and (with
    a tokenizer) the template's rendering and `max_length`."""

    stage: str
    max_error_rate: float = 0.0
    roles: tuple[str, ...] = BASE_ROLES
    tokenizer: Any = None
    max_length: int | None = None


@dataclass
class Mixture:
    """The shuffled, weighted training rows and the rows dropped for each rule."""

    dataset: Any
    rejected: Counter = field(default_factory=Counter)


def read_rows(spec: DatasetSpec, tally: RowTally) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(column names, (source, row) pairs) of one dataset file or folder; a source is `file:line` or `file#row`.
    Malformed records (not JSON, not an object, bad bytes) are counted in `tally`."""
    path = spec.path
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    split = spec.split if path.is_dir() else None
    rows = []
    for record in read_records(path, text_field=None, split=split, errors="yield"):
        tally.total += 1
        if record.error:
            tally.reject(record.source, RowError(record.reason, record.error))
        else:
            rows.append((record.source, record.data))
    if not rows:
        tally.check()  # every record malformed: that is the line to show
        raise DataError(f"{path}: empty dataset (no rows)")
    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    return columns, rows


def detect(columns: list[str], spec: DatasetSpec, stage: str) -> str:
    """The layout of a dataset, or a one-line DataError naming the columns found and expected."""
    found = ", ".join(columns) or "none"
    if spec.format != "auto":
        need = LAYOUTS[spec.format]
        if not set(need) <= set(columns):
            raise DataError(f"{spec.path}: format '{spec.format}' needs columns {'+'.join(need)}; "
                            f"columns found: {found}")
        return spec.format
    candidates = ("preference",) if stage == "dpo" else ("messages", "sharegpt", "prompt_completion")
    for layout in candidates:
        if set(LAYOUTS[layout]) <= set(columns):
            return layout
    raise DataError(f"{spec.path}: columns found: {found}; expected: {EXPECTED[stage]}")


def _turns(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        got = "a string" if isinstance(value, str) else "nothing" if value is None else type(value).__name__
        raise RowError("layout", f"expected a list of messages, got {got}")
    out = []
    for m in value:
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
            raise RowError("layout", "every message needs a 'role' and a string 'content'")
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out


def _as_turns(value: Any, role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else _turns(value)


def sft_row(row: dict[str, Any], layout: str, roles: tuple[str, ...]) -> dict[str, Any]:
    """One row as `{"messages": [...]}`; RowError for a malformed row or a broken rule."""
    if layout == "messages":
        messages = _turns(row.get("messages"))
    elif layout == "sharegpt":
        turns = row.get("conversations")
        if not isinstance(turns, list):
            raise RowError("layout", f"'conversations' must be a list of turns, got {type(turns).__name__}")
        messages = []
        for m in turns:
            role = SHAREGPT_ROLES.get(str(m.get("from", "")).lower()) if isinstance(m, dict) else None
            if role is None or not isinstance(m.get("value"), str):
                raise RowError("role", f"ShareGPT turns need 'from' in {sorted(SHAREGPT_ROLES)} and a string 'value'")
            messages.append({"role": role, "content": m["value"]})
    else:
        messages = _as_turns(row.get("prompt"), "user") + _as_turns(row.get("completion"), "assistant")
    check_conversation(messages, roles)
    return {"messages": messages}


def degenerate(row: dict[str, Any]) -> str | None:
    """Why a preference pair teaches nothing (an empty answer, chosen equal to rejected), or None."""
    for key in ("chosen", "rejected"):
        if not row.get(key):
            return f"empty '{key}'"
    return "chosen equals rejected" if row["chosen"] == row["rejected"] else None


def usable_pairs(rows: list[tuple[str, dict[str, Any]]], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The pairs of one DPO dataset that are not degenerate; logs how many were rejected and the first;
    a DataError when none is left."""
    found = [(source, why) for source, row in rows if (why := degenerate(row))]
    if not found:
        return rows
    bad = {source for source, _ in found}
    if len(found) == len(rows):
        raise DataError(f"{path}: all {len(rows)} preference pairs are degenerate ({found[0][0]}: {found[0][1]}); "
                        "nothing to learn")
    log.warning("dpo: %s: rejected %d of %d degenerate pairs (first %s: %s)", path, len(found), len(rows), *found[0])
    return [(source, row) for source, row in rows if source not in bad]


def dpo_row(row: dict[str, Any], conversational: bool, roles: tuple[str, ...]) -> dict[str, Any]:
    """One preference pair; plain strings become one-turn conversations when `conversational`."""
    if not row.get("prompt"):
        raise RowError("empty_prompt", "empty 'prompt'")
    if not conversational:
        if not all(isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise RowError("layout", "prompt, chosen and rejected must all be strings or all be message lists")
        return {k: row[k] for k in ("prompt", "chosen", "rejected")}
    pair = {"prompt": _as_turns(row["prompt"], "user"), "chosen": _as_turns(row.get("chosen"), "assistant"),
            "rejected": _as_turns(row.get("rejected"), "assistant")}
    for answer in ("chosen", "rejected"):
        check_conversation(pair["prompt"] + pair[answer], roles)
    return pair


def weighted(rows: list[dict[str, Any]], weight: float, rng: random.Random) -> list[dict[str, Any]]:
    """Every row int(weight) times plus a seeded sample for the fraction."""
    whole, frac = int(weight), weight - int(weight)
    return rows * whole + rng.sample(rows, round(len(rows) * frac))


def _checked(spec: DatasetSpec, layout: str, rows: list[tuple[str, dict[str, Any]]], tally: RowTally,
             policy: RowPolicy, conversational: bool) -> list[dict[str, Any]]:
    """The normalized rows of one dataset that follow every rule; the rest counted in `tally`, which fails the
    dataset above the rate; with a tokenizer, a DataError when no row fits max_length."""
    kept, lengths = [], []
    for source, row in rows:
        try:
            norm = sft_row(row, layout, policy.roles) if policy.stage == "sft" else \
                dpo_row(row, conversational, policy.roles)
            if policy.tokenizer is not None:
                lengths.append(token_length(policy.tokenizer, norm))
        except RowError as e:
            tally.reject(source, e)
            continue
        kept.append(norm)
    tally.check()
    if policy.max_length is not None:
        check_lengths(spec.path, lengths, policy.max_length, policy.stage)
    return kept


def load_mixture(specs: Iterable[DatasetSpec], policy: RowPolicy, seed: int) -> Mixture:
    """The shuffled, weighted mixture as a `datasets.Dataset`; logs rows per dataset and what was dropped."""
    from datasets import Dataset

    rng = random.Random(seed)
    loaded = []
    for spec in specs:
        tally = RowTally(spec.path, policy.stage, policy.max_error_rate)
        columns, rows = read_rows(spec, tally)
        layout = detect(columns, spec, policy.stage)
        loaded.append((spec, layout, usable_pairs(rows, spec.path) if policy.stage == "dpo" else rows, tally))
    conversational = policy.stage == "dpo" and any(not isinstance(rows[0][1].get("prompt"), str)
                                                   for _, _, rows, _ in loaded)
    mixed: list[dict[str, Any]] = []
    rejected: Counter = Counter()
    for spec, layout, rows, tally in loaded:
        taken = weighted(_checked(spec, layout, rows, tally, policy, conversational), spec.weight, rng)
        rejected.update(tally.rejected)
        log.info("%s: %s (%s), %d rows x %g -> %d", policy.stage, spec.path, layout, len(rows), spec.weight,
                 len(taken))
        mixed += taken
    if not mixed:
        raise DataError(f"{policy.stage}: the weighted mixture is empty (weights too small for the datasets)")
    rng.shuffle(mixed)
    return Mixture(Dataset.from_list(mixed), rejected)
