"""The `import` stage: a Hugging Face folder -> a verified Megatron checkpoint + tokenizer for cpt."""

from __future__ import annotations

import logging
import os

from factory.config import FactoryConfig
from factory.errors import ConfigError
from factory.manifest import RunManifest
from factory.runner import Plan

log = logging.getLogger(__name__)


def _section(cfg: FactoryConfig):
    if cfg.hf_import is None:
        raise ConfigError("import: the config has no 'hf_import' section")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # the TP=1 conversion model lives in one process
        raise ConfigError("import: runs in one process (any saved TP/PP/EP loads at TP=1); launch it without torchrun")
    return cfg.hf_import


def plan(cfg: FactoryConfig) -> Plan:
    ic = _section(cfg)
    root = ic.output_dir or cfg.stage_dir("import") / "checkpoints"
    if not (ic.hf_dir / "config.json").is_file():
        raise ConfigError(f"hf_import.hf_dir={ic.hf_dir}: no config.json there")
    reads = [ic.hf_dir] + ([ic.extend_vocab.tokenizer_dir, *ic.extend_vocab.text] if ic.extend_vocab else [])
    missing = [f"hf_import: input not found: {p}" for p in reads[1:] if not p.exists()]
    if missing:
        raise ConfigError(missing)
    return Plan(output_dir=root.parent, reads=reads, writes=[root, root.parent / "tokenizer"],
                notes=[f"verified: max |logit diff| <= {ic.probe.tolerance:g} or nothing is written"])


def run(cfg: FactoryConfig, plan: Plan, manifest: RunManifest) -> None:
    from factory.convert.hf_import import import_hf

    ic = _section(cfg)
    root, tokenizer = plan.writes
    manifest.add_input(ic.hf_dir, role="hf_model")
    def convert(out_root, tokenizer_out):
        return import_hf(ic.hf_dir, out_root, runtime=cfg.runtime, tokenizer_out=tokenizer_out,
                         seq_length=ic.seq_length, make_vocab_size_divisible_by=ic.make_vocab_size_divisible_by,
                         token_dispatcher=ic.token_dispatcher, probe=ic.probe)

    if ic.extend_vocab is None:
        result = convert(root, tokenizer)
    else:
        from factory.convert.vocab import import_extended

        result, extension = import_extended(convert, ic, root, tokenizer, cfg.runtime)
        manifest.add_input(ic.extend_vocab.tokenizer_dir, role="vocab_pieces")
        for path in ic.extend_vocab.text:
            manifest.add_input(path, role="vocab_text")
        manifest.record(**extension.metrics())
    manifest.add_output(root, role="checkpoint")
    manifest.add_output(tokenizer, role="tokenizer")
    manifest.record(architecture=result.architecture, max_abs_logit_diff=result.max_abs_logit_diff,
                    seconds=round(result.seconds, 3))
    log.info("import: %s -> %s, max |logit diff| %.3g", result.architecture, root, result.max_abs_logit_diff)
