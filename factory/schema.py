"""Base class for config sections: strict keys, a docstring per field, collected rule checks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys are errors; every field carries its docstring as help."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=False)

    def problems(self, prefix: str) -> list[str]:
        """Rule violations inside this section, one line each, keys prefixed with `prefix`."""
        return []


def rule(problems: list[str], ok: bool, key: str, value: object, message: str) -> None:
    """Append `key=value: message` to `problems` unless `ok`."""
    if not ok:
        problems.append(f"{key}={value}: {message}")
