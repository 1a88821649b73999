"""The `export` stage: a Megatron checkpoint -> a verified Hugging Face folder (see docs/stages/convert.md)."""

from __future__ import annotations

import logging
import os

from factory.config import FactoryConfig
from factory.errors import ConfigError
from factory.manifest import RunManifest
from factory.runner import Plan

log = logging.getLogger(__name__)


def _section(cfg: FactoryConfig):
    if cfg.export is None:
        raise ConfigError("export: the config has no 'export' section")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # the TP=1 conversion model lives in one process
        raise ConfigError("export: runs in one process (any saved TP/PP/EP loads at TP=1); launch it without torchrun")
    return cfg.export


def plan(cfg: FactoryConfig) -> Plan:
    ec = _section(cfg)
    out = ec.output_dir or cfg.stage_dir("export") / "hf"
    tokenizer = ec.tokenizer_dir or cfg.stage_dir("tokenizer")
    missing = [f"export: input not found: {p}" for p in (ec.checkpoint, tokenizer) if not p.exists()]
    if missing:
        raise ConfigError(missing)
    return Plan(output_dir=out, reads=[ec.checkpoint, tokenizer],
                writes=[out / n for n in ("model.safetensors.index.json", "config.json", "generation_config.json",
                                          "README.md")],
                notes=[f"architecture={ec.architecture}, dtype={ec.dtype}, shards <= {ec.max_shard_gb} GB",
                       f"verified: max |logit diff| <= {ec.probe.tolerance:g} or nothing is written"])


def run(cfg: FactoryConfig, plan: Plan, manifest: RunManifest) -> None:
    from factory.convert.export import export_checkpoint

    ec = _section(cfg)
    tokenizer = plan.reads[1]
    manifest.add_input(ec.checkpoint, role="checkpoint")
    manifest.add_input(tokenizer, role="tokenizer")
    result = export_checkpoint(ec.checkpoint, plan.output_dir, runtime=cfg.runtime, tokenizer_dir=tokenizer,
                               architecture=ec.architecture, dtype=ec.dtype,
                               max_shard_bytes=int(ec.max_shard_gb * 1e9), probe=ec.probe,
                               run_dir=cfg.run.dir, name=cfg.run.name)
    manifest.add_output(plan.output_dir, role="hf_model")
    manifest.record(architecture=result.architecture, max_abs_logit_diff=result.max_abs_logit_diff,
                    shards=len(result.shards), bytes=result.total_bytes, seconds=round(result.seconds, 3))
    log.info("export: %s folder at %s, max |logit diff| %.3g", result.architecture, plan.output_dir,
             result.max_abs_logit_diff)
