"""The `sft` stage: TRL SFTTrainer on an HF folder (see docs/stages/posttrain.md)."""

from __future__ import annotations

from factory.config import FactoryConfig
from factory.manifest import RunManifest
from factory.posttrain import model as hf
from factory.posttrain.config import SftConfig
from factory.posttrain.training import plan_training, section, train
from factory.runner import Plan


def plan(cfg: FactoryConfig) -> Plan:
    sc = section(cfg, "sft")
    notes = [f"assistant-only loss {'on' if sc.assistant_only_loss else 'off'}, "
             f"packing {'on' if sc.packing else 'off'}, NEFTune alpha {sc.neftune_noise_alpha or 'off'}"]
    return plan_training(cfg, "sft", notes)


def make_trainer(sc: SftConfig, model, tok, data, kwargs: dict, peft=None):
    """TRL's SFTTrainer with the section's loss mask, packing and NEFTune options."""
    from trl import SFTConfig, SFTTrainer

    if sc.assistant_only_loss:
        hf.check_assistant_markers(tok, "sft.tokenizer_dir")
    args = SFTConfig(**kwargs, assistant_only_loss=sc.assistant_only_loss, packing=sc.packing,
                     neftune_noise_alpha=sc.neftune_noise_alpha)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)


def run(cfg: FactoryConfig, plan: Plan, manifest: RunManifest) -> None:
    sc = section(cfg, "sft")
    train(cfg, "sft", manifest, lambda *a: make_trainer(sc, *a))
