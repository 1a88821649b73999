"""The factory config: YAML presets + dotted overrides -> one validated, typed object.

Every problem is collected and reported together, one line each naming the key and the rule,
before any process group or file is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from factory.config_base import CoreConfig
from factory.errors import ConfigError
from factory.registry import CHAIN
from factory.schema import rule, section_type

INHERIT_KEY = "inherit"
YAML_MERGE = "tag:yaml.org,2002:merge"
MOE_MAKERS = ("upcycle",)
"""Sections whose stage turns the dense model into an MoE: expert parallelism then applies after it."""


class _StageSections(CoreConfig):
    """Every registered stage's sections on top of the shared ones, validated together."""

    def problems(self, prefix: str = "") -> list[str]:
        out = self.core_problems(dense_ep_ok=any(getattr(self, key, None) is not None for key in MOE_MAKERS))
        for stage in CHAIN:
            for spec in stage.sections:
                section = getattr(self, spec.key)
                out += section.problems(spec.key) if section is not None else []
            if stage.checks is not None and stage.configured(self):
                out += stage.checks(self)
        names = [stage.name for stage in CHAIN]
        for name in self.launch.stages if self.launch else ():
            rule(out, name in names, "launch.stages", name, f"not a stage (stages: {', '.join(names)})")
        return out


def _stage_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for stage in CHAIN:
        for spec in stage.sections:
            if spec.key not in fields:  # pretrain and cpt share a type, not a key
                fields[spec.key] = (spec.type | None, Field(default=None, description=spec.help))
    return fields


FactoryConfig = create_model("FactoryConfig", __base__=_StageSections, __module__=__name__, **_stage_fields())
FactoryConfig.__doc__ = "One config drives every stage; each stage reads the sections it needs."


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> FactoryConfig:
    """Read a YAML preset (following `inherit:`), apply `a.b.c=value` overrides, put the final run folder
    in place of `${run.dir}` in every string, validate."""
    raw = _read_yaml_tree(Path(path), seen=())
    for item in overrides:
        apply_override(raw, item)
    run = raw.get("run")
    if isinstance(run, dict) and run.get("dir") is not None:  # else validation names the missing run.dir
        raw = _interpolate(raw, str(run["dir"]), key="")
    return validate_config(raw, source=str(path))


RUN_DIR_REF = "${run.dir}"
"""The one reference a config string may hold: paths under the run folder follow `run.dir=` overrides."""


def _interpolate(node: Any, run_dir: str, key: str) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, run_dir, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, run_dir, f"{key}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    value = node.replace(RUN_DIR_REF, run_dir)
    if "${" in value:
        raise ConfigError(f"{key}={node!r}: only {RUN_DIR_REF} can be referenced in a config value")
    return value


def validate_config(raw: dict[str, Any], source: str = "<config>") -> FactoryConfig:
    try:
        cfg = FactoryConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError([_describe(err, source) for err in e.errors()]) from None
    problems = cfg.problems()
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return cfg


class RepeatedKey(yaml.constructor.ConstructorError):
    """A mapping that gives one key twice (plain YAML keeps the last value and drops the first silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, naming the line of the second; merge
    keys (`<<: *base`) still override as YAML defines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[tuple[type, Any], int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True) if key_node.tag != YAML_MERGE else None
            if not isinstance(key, (str, int, float, bool)):
                continue  # a merge key, or a key YAML itself refuses (unhashable)
            if (type(key), key) in first_line:
                raise RepeatedKey(None, None, f"key {key!r} given twice in one mapping (first at line "
                                  f"{first_line[type(key), key] + 1}; YAML would drop the first value)",
                                  key_node.start_mark)
            first_line[type(key), key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML as the factory reads it: safe tags only, no key given twice."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def _read_yaml_tree(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        if path.resolve() in seen:
            raise ConfigError(f"{path}: '{INHERIT_KEY}' forms a cycle")
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: config file cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    parent = data.pop(INHERIT_KEY, None)
    if parent is None:
        return data
    base = _read_yaml_tree((path.parent / str(parent)), seen + (path.resolve(),))
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `raw[a][b][c] = value` from `a.b.c=value` (the value read as YAML), creating sections."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}': expected dotted.key=value")
    try:
        value = load_yaml(text) if text else ""
    except RepeatedKey as e:
        raise ConfigError(f"override '{item}': {e.problem}") from None
    except yaml.YAMLError:
        value = text  # not YAML: the text itself (validation names the key if a string does not fit)
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override '{item}': {'.'.join(parents[:i + 1])} is not a section")
        node = child
    node[leaf] = value


def _describe(err: dict[str, Any], source: str) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "<top>"
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = f" (known keys: {', '.join(known)})" if known else ""
        return f"{source}: {key}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{source}: {key}: required key is missing"
    return f"{source}: {key}={err.get('input')!r}: {err['msg']}"


def _known_keys(loc: list[str]) -> list[str]:
    """Field names of the section at `loc`, for 'unknown key' hints."""
    cls: type[BaseModel] | None = FactoryConfig
    for part in loc:
        field = cls.model_fields.get(part) if cls else None
        cls = section_type(field.annotation) if field else None
    return sorted(cls.model_fields) if cls else []
