"""The factory config: YAML presets + dotted overrides -> one validated, typed object.

Every problem is collected and reported together, one line each naming the key and the rule,
before any process group or file is touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, Field, ValidationError

from factory.errors import ConfigError
from factory.data.config import DataConfig
from factory.data.pack_config import BlendConfig, PackConfig
from factory.data.synth.config import SynthConfig
from factory.launch.config import LaunchConfig
from factory.model.config import ModelConfig
from factory.posttrain.config import DpoConfig, EvalConfig, SftConfig
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.train.config import TrainConfig
from factory.convert.config import ExportConfig, ImportConfig
from factory.schema import Section, rule
from factory.upcycle.config import UpcycleConfig
from tokenizer.config import TokenizerConfig

INHERIT_KEY = "inherit"


class RunConfig(Section):
    """Names the run and where its artifacts go."""

    name: str
    """Run name, used in logs and manifests."""
    dir: Path
    """Root folder of the run; each stage writes to `<dir>/<stage>/` unless its section says otherwise."""


class FactoryConfig(Section):
    """One config drives every stage; each stage reads the sections it needs."""

    run: RunConfig
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    model: ModelConfig | None = None
    """Model shapes; needed by the model stages."""
    tokenizer: TokenizerConfig | None = None
    """Tokenizer training: inputs, MeCab pretokenization, SentencePiece options; needed by the tokenizer stage."""
    data: DataConfig | None = None
    """Corpora to ingest, filter and dedup into JSONL."""
    pack: PackConfig | None = None
    """Datasets to pack into Megatron indexed datasets."""
    blend: BlendConfig | None = None
    """Training mixture by curriculum phase, over the packed datasets."""
    synth: SynthConfig | None = None
    """Synthetic data generation (persona x seed document) against a chat endpoint."""
    pretrain: TrainConfig | None = None
    """Pretraining from scratch on the packed blend."""
    cpt: TrainConfig | None = None
    """Continued pretraining from a checkpoint (pretrain, upcycle or import output)."""
    upcycle: UpcycleConfig | None = None
    """Dense checkpoint -> MoE checkpoint equal to it at step 0 (copy, granular, shared, drop)."""
    export: ExportConfig | None = None
    """Megatron checkpoint -> Hugging Face folder (Llama, Mixtral, Qwen3-MoE, Qwen2-MoE), verified by logits."""
    hf_import: ImportConfig | None = None
    """Hugging Face folder -> Megatron checkpoint for cpt, verified by logits (the `import` stage)."""
    launch: LaunchConfig | None = None
    """How `python -m factory.launch` starts stages: torchrun locally, or an sbatch script for Slurm."""
    sft: SftConfig | None = None
    """Supervised fine-tuning of an HF folder with TRL (messages, ShareGPT, prompt/completion; full or LoRA)."""
    dpo: DpoConfig | None = None
    """Direct preference optimization of an HF folder with TRL (prompt/chosen/rejected; full or LoRA)."""
    eval: EvalConfig | None = None
    """Perplexity, code-switch rate, JGLUE (lm-evaluation-harness) and Japanese MT-Bench of an HF folder or
    checkpoint, and checkpoints scored by iteration."""

    def problems(self, prefix: str = "") -> list[str]:
        out = self.parallel.problems("parallel")
        if self.model is not None:
            out += self.model.problems("model")
            # An upcycle section turns this dense model into an MoE: EP then applies to the stages after it.
            out += model_parallel_problems(self.model, self.parallel, dense_ep_ok=self.upcycle is not None)
        out += self.data.problems("data") if self.data else []
        out += self.pack.problems("pack") if self.pack else []
        out += self.blend.problems("blend") if self.blend else []
        out += self.synth.problems("synth") if self.synth else []
        out += self.pretrain.problems("pretrain") if self.pretrain else []
        out += self.cpt.problems("cpt") if self.cpt else []
        out += self.upcycle.problems("upcycle") if self.upcycle else []
        out += self.export.problems("export") if self.export else []
        out += self.hf_import.problems("hf_import") if self.hf_import else []
        out += self.launch.problems("launch") if self.launch else []
        out += self.sft.problems("sft") if self.sft else []
        out += self.dpo.problems("dpo") if self.dpo else []
        out += self.eval.problems("eval") if self.eval else []
        if self.pretrain is not None:
            rule(out, self.pretrain.optimizer.lr is not None, "pretrain.optimizer.lr", None,
                 "required for pretraining (only cpt can inherit the checkpoint's LR)")
        if self.blend is not None:
            packed = {d.name for d in self.pack.datasets} if self.pack else set()
            for i, phase in enumerate(self.blend.phases):
                for e in phase.datasets:
                    rule(out, e.dataset in packed, f"blend.phases[{i}].datasets", e.dataset,
                         f"not a pack dataset (known: {', '.join(sorted(packed)) or 'none'})")
        return out

    def stage_dir(self, stage: str) -> Path:
        return self.run.dir / stage

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """sha256 of the resolved config, stable across key order."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def model_parallel_problems(m: ModelConfig, p: ParallelConfig, dense_ep_ok: bool = False) -> list[str]:
    """Divisibility of model shapes by the parallel layout, one line per problem."""
    out: list[str] = []
    tp = p.tensor
    rule(out, m.num_attention_heads % tp == 0, "model.num_attention_heads", m.num_attention_heads,
         f"must be divisible by parallel.tensor ({tp})")
    rule(out, m.query_groups % tp == 0, "model.num_query_groups", m.query_groups,
         f"must be divisible by parallel.tensor ({tp})")
    rule(out, m.ffn_hidden_size % tp == 0, "model.ffn_hidden_size", m.ffn_hidden_size,
         f"must be divisible by parallel.tensor ({tp})")
    rule(out, m.num_layers % p.pipeline == 0, "model.num_layers", m.num_layers,
         f"must be divisible by parallel.pipeline ({p.pipeline})")
    rule(out, p.context == 1 or m.seq_length % (2 * p.context) == 0, "model.seq_length", m.seq_length,
         f"must be divisible by 2 x parallel.context ({2 * p.context})")
    padded = m.padded_vocab_size(tp)
    rule(out, padded % (m.make_vocab_size_divisible_by * tp) == 0 and padded >= m.vocab_size,
         "model.vocab_size", m.vocab_size, "padding to a multiple of make_vocab_size_divisible_by x TP failed")
    if m.moe is None:
        rule(out, p.expert == 1 or dense_ep_ok, "parallel.expert", p.expert, "expert parallelism needs model.moe")
        return out
    rule(out, m.moe.num_experts % p.expert == 0, "model.moe.num_experts", m.moe.num_experts,
         f"must be divisible by parallel.expert ({p.expert})")
    expert_ffn = m.moe.ffn_hidden_size or m.ffn_hidden_size
    rule(out, expert_ffn % p.expert_tensor_size == 0, "model.moe.ffn_hidden_size", expert_ffn,
         f"must be divisible by parallel.expert_tensor ({p.expert_tensor_size})")
    rule(out, tp == 1 or p.sequence_parallel, "parallel.sequence_parallel", p.sequence_parallel,
         "Megatron MoE layers with parallel.tensor > 1 need sequence_parallel=true")
    return out


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> FactoryConfig:
    """Read a YAML preset (following `inherit:`), apply `a.b.c=value` overrides, validate."""
    raw = _read_yaml_tree(Path(path), seen=())
    for item in overrides:
        _apply_override(raw, item)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict[str, Any], source: str = "<config>") -> FactoryConfig:
    try:
        cfg = FactoryConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError([_describe(err, source) for err in e.errors()]) from None
    problems = cfg.problems()
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return cfg


def _read_yaml_tree(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: '{INHERIT_KEY}' forms a cycle")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}': expected dotted.key=value")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
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
        cls = _section_type(field.annotation) if field else None
    return sorted(cls.model_fields) if cls else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = getattr(annotation, "__args__", (annotation,))
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None
