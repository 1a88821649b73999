"""The pack stage's blend.json as training reads it: phases of dataset prefixes and weights, checked strictly
(no torch here: the dry run's budget reads it too)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from factory.errors import ConfigError, DataError
from factory.strict_json import read_json_object


@dataclass(frozen=True)
class PhaseBlend:
    """One blend phase as the pack stage resolved it."""

    name: str
    prefixes: list[str]
    weights: list[float]


def blend_phases(path: Path) -> list[PhaseBlend]:
    """Every phase of a blend.json (written by the pack stage, or by hand): a DataError naming the file, the
    phase and the value for anything Megatron's blend would not take (a weight that is not a finite number
    above 0, prefixes and weights of different lengths, a phase name given twice)."""
    phases = read_json_object(path, DataError, "a blend file").get("phases")
    if not isinstance(phases, list) or not phases:
        raise DataError(f"{path}: not a blend file (expected a non-empty 'phases' list)")
    blends: list[PhaseBlend] = []
    for i, phase in enumerate(phases):
        name = phase.get("name") if isinstance(phase, dict) else None
        if not isinstance(name, str) or not name:
            raise DataError(f"{path}: phases[{i}] has no 'name'")
        if any(b.name == name for b in blends):
            raise DataError(f"{path}: phase {name!r} given twice")
        prefixes, weights = phase.get("prefixes"), phase.get("weights")
        if not (isinstance(prefixes, list) and prefixes and all(isinstance(p, str) for p in prefixes)):
            raise DataError(f"{path}: phase {name!r}: 'prefixes' must be a non-empty list of dataset prefixes")
        if not isinstance(weights, list) or len(weights) != len(prefixes):
            raise DataError(f"{path}: phase {name!r}: 'weights' must be a list of {len(prefixes)} numbers, one per "
                            f"prefix; got {weights!r}")
        for prefix, weight in zip(prefixes, weights):
            number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not (number and math.isfinite(weight) and weight > 0):
                raise DataError(f"{path}: phase {name!r}: weight {weight!r} for {prefix} (expected a finite number "
                                "above 0)")
        blends.append(PhaseBlend(name, list(prefixes), [float(w) for w in weights]))
    return blends


def read_blend(path: Path, phase: str | None) -> PhaseBlend:
    """The named phase (or the first) from the pack stage's blend.json, with its files checked."""
    if not path.is_file():
        raise ConfigError(f"blend file not found: {path} (run the pack stage first)")
    blends = blend_phases(path)
    names = [b.name for b in blends]
    chosen = blends[0] if phase is None and blends else next((b for b in blends if b.name == phase), None)
    if chosen is None:
        raise ConfigError(f"phase={phase}: not in {path} (phases: {', '.join(names) or 'none'})")
    for prefix in chosen.prefixes:
        for ext in (".bin", ".idx"):
            if not Path(prefix + ext).is_file():
                raise DataError(f"{path}: phase {chosen.name} names {prefix}{ext}, which does not exist")
        if Path(prefix + ".bin").stat().st_size == 0:
            raise DataError(f"{path}: phase {chosen.name} names {prefix}.bin, which holds no tokens")
    return chosen
