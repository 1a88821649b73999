"""A stage's pipeline fingerprint: the values of its result keys (not the operational ones) and its
upstream stages' fingerprints; and which keys differ between two fingerprints, by dotted name."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from factory.config_base import CoreConfig
from factory.schema import CONTINUES, view
from factory.stage_api import Stage


def sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"prefix.a.b": 1}`; lists and scalars are leaves."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(flatten(inner, f"{prefix}.{key}"))
    return out


def stage_fingerprint(cfg: CoreConfig, stage: Stage, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`values`: every result key of the sections that change the stage's result; `continues`: the keys whose
    change continues its output (train_iters); `after`: upstream fingerprints; `fingerprint`: their hash."""
    values: dict[str, Any] = {}
    continues: dict[str, Any] = {}
    for section in stage.result_sections:
        current = getattr(cfg, section, None)
        values.update(flatten(view(current, None), section))
        if current is not None:
            continues.update({k: v for k, v in flatten(view(current, CONTINUES), section).items() if v != {}})
    after = {name: upstream[name]["fingerprint"] for name in stage.after if name in upstream}
    return {"values": values, "continues": continues, "after": after,
            "fingerprint": sha([stage.name, values, after])}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs (added or removed ones included)."""
    return sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT))


_ABSENT = object()
