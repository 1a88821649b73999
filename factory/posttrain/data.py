"""SFT and DPO datasets: read any records file or `datasets` folder, detect the layout, normalize, mix by weight.

Every SFT row becomes a `messages` conversation (ShareGPT `from/value` is renamed, a prompt/completion
pair becomes one user turn and one assistant turn) so that all datasets share the chat template and the
assistant-only loss. DPO rows keep prompt/chosen/rejected; plain strings turn into one-turn conversations
when another dataset of the mixture is conversational.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Iterable

from factory.errors import DataError
from factory.posttrain.config import DatasetSpec
from factory.records import read_records

log = logging.getLogger(__name__)

# Columns each layout needs, in detection order.
LAYOUTS = {"messages": ("messages",), "sharegpt": ("conversations",),
           "prompt_completion": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}
EXPECTED = {"sft": "messages | conversations (ShareGPT from/value) | prompt+completion",
            "dpo": "prompt+chosen+rejected"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "model": "assistant"}


def read_rows(spec: DatasetSpec) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(column names, (source, row) pairs) of one dataset file or folder; a source is `file:line` or `file#row`."""
    path = spec.path
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    split = spec.split if path.is_dir() else None
    rows = [(r.source, r.data) for r in read_records(path, text_field=None, split=split)]
    if not rows:
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


def _turns(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        raise DataError(f"{where}: expected a list of messages, got a string")
    out = []
    for m in value or []:
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: every message needs a 'role' and a string 'content'")
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out


def _as_turns(value: Any, role: str, where: str) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else _turns(value, where)


def sft_row(row: dict[str, Any], layout: str, where: str) -> dict[str, Any]:
    """One row as `{"messages": [...]}` with at least one assistant turn."""
    if layout == "messages":
        messages = _turns(row.get("messages"), where)
    elif layout == "sharegpt":
        messages = []
        for m in row.get("conversations") or []:
            role = SHAREGPT_ROLES.get(str(m.get("from", "")).lower()) if isinstance(m, dict) else None
            if role is None or not isinstance(m.get("value"), str):
                raise DataError(f"{where}: ShareGPT turns need 'from' in {sorted(SHAREGPT_ROLES)} and a string 'value'")
            messages.append({"role": role, "content": m["value"]})
    else:
        messages = _as_turns(row.get("prompt"), "user", where) + _as_turns(row.get("completion"), "assistant", where)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant turn (nothing to train on)")
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


def dpo_row(row: dict[str, Any], conversational: bool, where: str) -> dict[str, Any]:
    """One preference pair; plain strings become one-turn conversations when `conversational`."""
    if not row.get("prompt"):
        raise DataError(f"{where}: empty 'prompt'")
    if not conversational:
        if not all(isinstance(row[k], str) for k in ("prompt", "chosen", "rejected")):
            raise DataError(f"{where}: prompt, chosen and rejected must all be strings or all be message lists")
        return {k: row[k] for k in ("prompt", "chosen", "rejected")}
    return {"prompt": _as_turns(row["prompt"], "user", where),
            "chosen": _as_turns(row["chosen"], "assistant", where),
            "rejected": _as_turns(row["rejected"], "assistant", where)}


def weighted(rows: list[dict[str, Any]], weight: float, rng: random.Random) -> list[dict[str, Any]]:
    """Every row int(weight) times plus a seeded sample for the fraction."""
    whole, frac = int(weight), weight - int(weight)
    return rows * whole + rng.sample(rows, round(len(rows) * frac))


def load_mixture(specs: Iterable[DatasetSpec], stage: str, seed: int):
    """A shuffled `datasets.Dataset` of the normalized, weighted mixture; logs rows per dataset."""
    from datasets import Dataset

    rng = random.Random(seed)
    loaded = []
    for spec in specs:
        columns, rows = read_rows(spec)
        layout = detect(columns, spec, stage)
        loaded.append((spec, layout, usable_pairs(rows, spec.path) if stage == "dpo" else rows))
    conversational = stage == "dpo" and any(not isinstance(rows[0][1].get("prompt"), str) for _, _, rows in loaded)
    mixed: list[dict[str, Any]] = []
    for spec, layout, rows in loaded:
        if stage == "sft":
            norm = [sft_row(row, layout, source) for source, row in rows]
        else:
            norm = [dpo_row(row, conversational, source) for source, row in rows]
        taken = weighted(norm, spec.weight, rng)
        log.info("%s: %s (%s), %d rows x %g -> %d", stage, spec.path, layout, len(rows), spec.weight, len(taken))
        mixed += taken
    if not mixed:
        raise DataError(f"{stage}: the weighted mixture is empty (weights too small for the datasets)")
    rng.shuffle(mixed)
    return Dataset.from_list(mixed)
