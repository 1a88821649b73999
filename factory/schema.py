"""Base class for config sections: strict keys, a docstring per field, collected rule checks, key roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class KeyRole:
    """A marker in a field's `Annotated[...]` saying how a change of its value affects the stage's result."""

    name: str


OPERATIONAL = KeyRole("operational")
"""Logging, monitoring, retention, fault tolerance, timeouts, worker counts: a change re-runs nothing."""
CONTINUES = KeyRole("continues")
"""A change re-runs the stage continuing its output (a larger `train_iters` resumes the run)."""


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


def view(section: BaseModel | None, role: KeyRole | None) -> Any:
    """The JSON form of `section` keeping only the keys marked `role`, or with `role=None` only the keys with
    no role (the ones that change the result); nested sections and lists of them are followed."""
    return None if section is None else _select(type(section), section.model_dump(mode="json"), role)


def _select(cls: type[BaseModel], data: dict[str, Any], role: KeyRole | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        roles = [m for m in field.metadata if isinstance(m, KeyRole)]
        value = data.get(name)
        inner = section_type(field.annotation)
        if roles:
            if role in roles:
                out[name] = value
        elif inner is not None and value is not None:
            nested = [_select(inner, v, role) for v in value] if isinstance(value, list) else _select(inner, value, role)
            if role is None or any(nested if isinstance(nested, list) else [nested]):
                out[name] = nested
        elif role is None:
            out[name] = value
    return out


def section_type(annotation: Any) -> type[BaseModel] | None:
    """The section class inside an annotation (`X`, `X | None`, `list[X]`), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = section_type(arg)
        if found is not None:
            return found
    return None
