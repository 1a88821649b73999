"""The `import` stage: a Hugging Face folder -> a verified Megatron checkpoint + tokenizer for cpt."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from factory import outputs
from factory.config_base import CoreConfig
from factory.convert.config import ImportConfig
from factory.errors import ConfigError, missing_inputs
from factory.manifest import RunManifest
from factory.stage_api import Plan, SectionSpec, Stage

if TYPE_CHECKING:  # for annotations only
    from factory.convert.hf_import import ImportResult

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ImportPlan(Plan):
    checkpoints: Path
    tokenizer_dir: Path


def plan(cfg: CoreConfig) -> ImportPlan:
    import_config = STAGE.section_of(cfg)
    declared = outputs.hf_import(cfg)
    if not (import_config.hf_dir / "config.json").is_file():
        raise ConfigError(f"hf_import.hf_dir={import_config.hf_dir}: no config.json there")
    reads = [import_config.hf_dir] + ([import_config.extend_vocab.tokenizer_dir,
                                       *import_config.extend_vocab.text] if import_config.extend_vocab else [])
    missing = missing_inputs("hf_import", reads[1:])
    if missing:
        raise ConfigError(missing)
    return ImportPlan(output_dir=declared.dir, reads=reads, writes=[declared.checkpoints, declared.tokenizer_dir],
                      checkpoints=declared.checkpoints, tokenizer_dir=declared.tokenizer_dir,
                notes=[f"verified: max |logit diff| <= {import_config.probe.tolerance:g} or nothing is written"])


def run(cfg: CoreConfig, plan: ImportPlan, manifest: RunManifest) -> None:
    from factory.convert.hf_import import import_hf

    import_config = STAGE.section_of(cfg)
    root, tokenizer = plan.checkpoints, plan.tokenizer_dir
    manifest.add_input(import_config.hf_dir, role="hf_model")
    def convert(out_root: Path, tokenizer_out: Path) -> ImportResult:
        return import_hf(import_config.hf_dir, out_root, runtime_cfg=cfg.runtime, tokenizer_out=tokenizer_out,
                         seq_length=import_config.seq_length,
                         make_vocab_size_divisible_by=import_config.make_vocab_size_divisible_by,
                         token_dispatcher=import_config.token_dispatcher, probe=import_config.probe)

    if import_config.extend_vocab is None:
        result = convert(root, tokenizer)
    else:
        from factory.convert.vocab import import_extended

        result, extension = import_extended(convert, import_config, root, tokenizer, cfg.runtime)
        manifest.add_input(import_config.extend_vocab.tokenizer_dir, role="vocab_pieces")
        for path in import_config.extend_vocab.text:
            manifest.add_input(path, role="vocab_text")
        manifest.record(**extension.metrics())
    manifest.add_output(root, role="checkpoint")
    manifest.add_output(tokenizer, role="tokenizer")
    manifest.record(architecture=result.architecture, max_abs_logit_diff=result.max_abs_logit_diff,
                    seconds=round(result.seconds, 3))
    log.info("import: %s -> %s, max |logit diff| %.3g", result.architecture, root, result.max_abs_logit_diff)


STAGE: Stage[ImportConfig, ImportPlan] = Stage(
    name="import", help="Hugging Face folder -> Megatron checkpoint, verified by logits",
    sections=(SectionSpec("hf_import", ImportConfig, "Hugging Face folder -> Megatron checkpoint for cpt, verified by logits (the `import` stage)."),),
    plan=plan, run=run, outputs=outputs.hf_import, result_sections=("runtime", "hf_import"), after=())
