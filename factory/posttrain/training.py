"""What the sft and dpo stages share: default paths, the plan, loading inputs, training and publishing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from factory import outputs
from factory.config_base import CoreConfig
from factory.errors import ConfigError, missing_inputs
from factory.manifest import RunManifest
from factory.posttrain import model as hf
from factory.posttrain.config import TrainSettings
from factory.posttrain.data import RowPolicy, load_mixture
from factory.posttrain.rules import template_roles
from factory.stage_api import Plan, Stage

if TYPE_CHECKING:  # for annotations only
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

log = logging.getLogger(__name__)
DEFAULT_INPUT = {"sft": outputs.export, "dpo": outputs.sft}
"""Where each stage's model comes from unless `<stage>.model` is set: the previous stage's output."""


@dataclass(frozen=True)
class Paths:
    model: Path
    tokenizer: Path
    output: Path
    work: Path
    """Trainer checkpoints and the folder being written before it replaces `output`: `.<output>.trainer` beside
    it, named after the output so that it is never a folder of someone else's."""


def paths(cfg: CoreConfig, stage: Stage) -> Paths:
    settings: TrainSettings = stage.section_of(cfg)
    model = settings.model or DEFAULT_INPUT[stage.name](cfg).dir
    out = stage.outputs(cfg).dir
    return Paths(model=model, tokenizer=settings.tokenizer_dir or model, output=out,
                 work=out.with_name(f".{out.name}.trainer"))


def plan_training(cfg: CoreConfig, stage: Stage, notes: list[str]) -> Plan:
    settings, p = stage.section_of(cfg), paths(cfg, stage)
    reads = [p.model] + ([p.tokenizer] if p.tokenizer != p.model else []) + [d.path for d in settings.datasets]
    missing = missing_inputs(stage.name, reads)
    if missing:
        raise ConfigError(missing)
    config = hf.check_causal_lm(p.model)
    notes = [f"model: {hf.describe(config)}", *notes]
    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    if positions and settings.max_length > positions:
        log.warning("%s.max_length=%d exceeds the model's max_position_embeddings (%d)",
                    stage.name, settings.max_length, positions)
        notes = [*notes, f"warning: max_length {settings.max_length} > max_position_embeddings {positions}"]
    batch = f"global batch {settings.global_batch_size} = micro {settings.micro_batch_size} x accumulation x world size"
    length = f"max_steps {settings.max_steps}" if settings.max_steps else f"{settings.epochs:g} epoch(s)"
    lora = (f"LoRA r={settings.lora.r} alpha={settings.lora.alpha} (merged at save)" if settings.lora
            else "full fine-tuning")
    return Plan(output_dir=p.output, reads=reads,
                writes=[p.output / "config.json", p.output / "loss_curve.json", p.work],
                notes=[f"LR {settings.learning_rate:g} {settings.lr_scheduler}, {length}, {batch}", lora,
                       *notes])


def train(cfg: CoreConfig, stage: Stage, manifest: RunManifest,
          build: Callable[[PreTrainedModel, PreTrainedTokenizerBase, Dataset, dict[str, Any], LoraConfig | None],
                          Trainer]) -> list[dict[str, float]]:
    """Load tokenizer, model and data, build the TRL trainer with `build(model, tok, data, kwargs, peft)`,
    train, and publish the HF folder; returns the loss curve."""
    from factory.posttrain.evaluate import chat_end, stop_ids

    settings, p = stage.section_of(cfg), paths(cfg, stage)
    tok = hf.load_tokenizer(p.tokenizer, f"{stage.name}.tokenizer_dir")
    policy = RowPolicy(stage.name, settings.max_error_rate, template_roles(tok.chat_template), tok,
                       settings.max_length)
    mixture = load_mixture(settings.datasets, policy, cfg.runtime.seed)
    data = mixture.dataset
    manifest.record(rows_rejected=sum(mixture.rejected.values()),
                    **{f"rows_rejected.{rule}": n for rule, n in sorted(mixture.rejected.items())})
    _, dtype = hf.device_and_dtype(cfg)
    model = hf.load_model(p.model, dtype, len(tok))
    for d in settings.datasets:
        manifest.add_input(d.path, role=f"dataset:{d.format}")
    manifest.add_input(p.model, role="model")
    trainer = build(model, tok, data, hf.trainer_kwargs(cfg, settings, p.work, stage.name),
                    hf.lora_config(settings.lora))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    final = p.work / "final"
    hf.save_trained(trainer, tok, p.model, dtype, final)
    curve = hf.publish(trainer, final, p.output, manifest, stage.name, stop_ids(cfg, tok), chat_end(cfg, tok),
                       p.tokenizer)
    manifest.record(train_rows=len(data), train_seconds=round(seconds, 3))
    return curve
