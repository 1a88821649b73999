"""The `pack` stage: records (JSONL, text, parquet, HF folders) -> Megatron indexed datasets (.bin/.idx), EOD
appended, plus blend.json (the training mixture by phase)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from factory import outputs
from factory.config_base import CoreConfig
from factory.data.encode import eod_id
from factory.data.pack import pack_records
from factory.data.pack_config import BlendConfig, PackConfig
from factory.errors import ConfigError, missing_inputs
from factory.io import atomic_dir, atomic_write_json
from factory.manifest import RunManifest
from factory.schema import rule
from factory.stage_api import Plan, SectionSpec, Stage

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PackPlan(Plan):
    tokenizer_model: Path
    """pack.tokenizer_dir's tokenizer.model, else the tokenizer stage's."""


def plan(cfg: CoreConfig) -> PackPlan:
    pack_config = STAGE.section_of(cfg)
    out = outputs.pack(cfg).dir
    model = tokenizer_model_path(cfg)
    reads = [model] + [d.path for d in pack_config.datasets]
    missing = missing_inputs("pack", reads)
    if missing:
        raise ConfigError(missing)
    writes = [out / f"{d.name}_text_document.{ext}" for d in pack_config.datasets for ext in ("bin", "idx")]
    if cfg.blend is not None:
        writes.append(out / "blend.json")
    return PackPlan(output_dir=out, reads=reads, writes=writes, tokenizer_model=model)


def tokenizer_model_path(cfg: CoreConfig) -> Path:
    own = STAGE.section_of(cfg).tokenizer_dir
    return own / "tokenizer.model" if own else outputs.tokenizer(cfg).model_file


def run(cfg: CoreConfig, plan: PackPlan, manifest: RunManifest) -> None:
    import sentencepiece as spm


    pack_config = STAGE.section_of(cfg)
    model_path = plan.tokenizer_model
    try:
        sp = spm.SentencePieceProcessor(model_file=str(model_path))
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"pack: cannot use tokenizer {model_path}: {e}") from None
    eod = eod_id(sp)
    if eod is None and pack_config.append_eod:
        raise ConfigError(f"pack: cannot use tokenizer {model_path}: it defines neither <EOD> nor </s>")
    manifest.add_input(model_path, role="tokenizer")
    totals: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    with atomic_dir(plan.output_dir) as tmp:
        for ds in pack_config.datasets:
            manifest.add_input(ds.path, role=f"dataset:{ds.name}")
            totals[ds.name] = pack_records(ds.path, ds.text_field, tmp / f"{ds.name}_text_document",
                                           model_path, sp.vocab_size(), eod if pack_config.append_eod else None,
                                           pack_config.num_workers, pack_config.task_bytes)
        atomic_write_json(tmp / "token_counts.json", totals)
        if cfg.blend is not None:
            atomic_write_json(tmp / "blend.json", resolve_blend(cfg, plan.output_dir, totals))
    seconds = time.perf_counter() - t0
    tokens = sum(t["tokens"] for t in totals.values())
    for name, t in totals.items():
        manifest.record(**{f"{name}.documents": t["documents"], f"{name}.tokens": t["tokens"]})
    manifest.record(tokens=tokens, documents=sum(t["documents"] for t in totals.values()),
                    seconds=round(seconds, 3), tokens_per_s=round(tokens / max(seconds, 1e-9)))
    for p in plan.writes:
        manifest.add_output(p)
    log.info("pack: %d tokens in %.1fs (%.0f tokens/s)", tokens, seconds, tokens / max(seconds, 1e-9))


def resolve_blend(cfg: CoreConfig, out_dir: Path, totals: dict[str, dict[str, int]]) -> dict:
    """Megatron blend spec per phase: path prefixes and normalized weights (repeat -> tokens x repeat)."""
    phases = []
    for phase in cfg.blend.phases:
        raw = [e.weight if e.weight is not None else totals[e.dataset]["tokens"] * e.repeat
               for e in phase.datasets]
        total = sum(raw)
        phases.append({
            "name": phase.name,
            "prefixes": [str(out_dir / f"{e.dataset}_text_document") for e in phase.datasets],
            "weights": [w / total for w in raw],
        })
    return {"phases": phases}


def blend_problems(cfg: CoreConfig) -> list[str]:
    """Every blend entry names a dataset of the pack section."""
    out: list[str] = []
    blend, pack = cfg.blend, cfg.pack
    packed = {d.name for d in pack.datasets} if pack else set()
    for i, phase in enumerate(blend.phases if blend else []):
        for entry in phase.datasets:
            rule(out, entry.dataset in packed, f"blend.phases[{i}].datasets", entry.dataset,
                 f"not a pack dataset (known: {', '.join(sorted(packed)) or 'none'})")
    return out


STAGE: Stage[PackConfig, PackPlan] = Stage(
    name="pack", help="tokenize and pack records into Megatron indexed datasets + blends",
    sections=(SectionSpec("pack", PackConfig, "Datasets to pack into Megatron indexed datasets."),
              SectionSpec("blend", BlendConfig, "Training mixture by curriculum phase, over the packed datasets.")),
    plan=plan, run=run, outputs=outputs.pack, result_sections=("pack", "blend"), after=("tokenizer", "data"), job_array=True,
    checks=blend_problems, cpus=lambda cfg: STAGE.section_of(cfg).num_workers)
