"""The `export` stage: a Megatron checkpoint -> a verified Hugging Face folder (see docs/stages/convert.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from factory import outputs
from factory.config_base import CoreConfig
from factory.convert.config import ExportConfig
from factory.convert.gguf import GGUF_NAME
from factory.errors import ConfigError, missing_inputs
from factory.manifest import RunManifest
from factory.stage_api import Plan, SectionSpec, Stage

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ExportPlan(Plan):
    checkpoint: Path
    tokenizer_dir: Path
    """The HF tokenizer files the folder gets: export.tokenizer_dir, else the tokenizer stage's output."""


def plan(cfg: CoreConfig) -> ExportPlan:
    export = STAGE.section_of(cfg)
    out = outputs.export(cfg).dir
    tokenizer = export.tokenizer_dir or outputs.tokenizer(cfg).dir
    missing = missing_inputs("export", (export.checkpoint, tokenizer, *export.gguf_text))
    if export.gguf:
        from factory.convert.gguf import llama_cpp_source

        try:
            llama_cpp_source()
        except ConfigError as e:
            missing += e.problems
    if missing:
        raise ConfigError(missing)
    names = ["model.safetensors.index.json", "config.json", "generation_config.json", "README.md"]
    notes = [f"architecture={export.architecture}, dtype={export.dtype}, shards <= {export.max_shard_gb} GB",
             f"verified: max |logit diff| <= {export.probe.tolerance:g} or nothing is written"]
    if export.gguf:
        names.append(GGUF_NAME)
        notes.append(f"{GGUF_NAME}: llama.cpp's converter, checked against transformers on <= {export.gguf_max_lines} "
                     f"lines of {', '.join(map(str, export.gguf_text))}; "
                     f"{'written anyway' if export.gguf_allow_mismatch else 'refused'} if its ids differ")
    return ExportPlan(output_dir=out, reads=[export.checkpoint, tokenizer, *export.gguf_text],
                      writes=[out / n for n in names],
                      notes=notes, checkpoint=export.checkpoint, tokenizer_dir=tokenizer)


def run(cfg: CoreConfig, plan: ExportPlan, manifest: RunManifest) -> None:
    from factory.convert.export import GgufCheck, export_checkpoint

    export = STAGE.section_of(cfg)
    tokenizer = plan.tokenizer_dir
    manifest.add_input(plan.checkpoint, role="checkpoint")
    manifest.add_input(tokenizer, role="tokenizer")
    gguf = None
    if export.gguf:
        from tokenizer.corpus import iter_lines

        gguf = GgufCheck(lines=list(islice(iter_lines(export.gguf_text, "text"), export.gguf_max_lines)),
                         allow_mismatch=export.gguf_allow_mismatch)
        for path in export.gguf_text:
            manifest.add_input(path, role="gguf_text")
    result = export_checkpoint(plan.checkpoint, plan.output_dir, runtime_cfg=cfg.runtime, tokenizer_dir=tokenizer,
                               architecture=export.architecture, dtype=export.dtype,
                               max_shard_bytes=int(export.max_shard_gb * 1e9), probe=export.probe,
                               run_dir=cfg.run.dir, name=cfg.run.name, gguf=gguf)
    manifest.add_output(plan.output_dir, role="hf_model")
    manifest.record(architecture=result.architecture, max_abs_logit_diff=result.max_abs_logit_diff,
                    shards=len(result.shards), bytes=result.total_bytes, seconds=round(result.seconds, 3),
                    **{f"gguf_{k}": v for k, v in (result.gguf or {}).items()})
    log.info("export: %s folder at %s, max |logit diff| %.3g", result.architecture, plan.output_dir,
             result.max_abs_logit_diff)


def architecture_problems(cfg: CoreConfig) -> list[str]:
    """export.architecture names a registered architecture (the registry imports torch: only a named one pays)."""
    name = STAGE.section_of(cfg).architecture
    if name == "auto":
        return []
    from factory.convert.architectures import get

    try:
        get(name, "export.architecture")
    except ConfigError as e:
        return e.problems
    return []


STAGE: Stage[ExportConfig, ExportPlan] = Stage(
    name="export", help="Megatron checkpoint -> Hugging Face folder, verified by logits",
    sections=(SectionSpec("export", ExportConfig, "Megatron checkpoint -> Hugging Face folder (Llama, Mixtral, Qwen3-MoE, Qwen2-MoE), verified by logits."),),
    plan=plan, run=run, outputs=outputs.export, result_sections=("runtime", "export"),
    after=("tokenizer", "pretrain", "upcycle", "import", "cpt"), checks=architecture_problems)
