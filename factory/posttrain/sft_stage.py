"""The `sft` stage: TRL SFTTrainer on an HF folder (see docs/stages/posttrain.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory import outputs
from factory.config_base import CoreConfig
from factory.manifest import RunManifest
from factory.posttrain import model as hf
from factory.posttrain.config import SftConfig
from factory.posttrain.training import plan_training, train
from factory.stage_api import Launch, Plan, SectionSpec, Stage

if TYPE_CHECKING:  # for annotations only
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTTrainer


def plan(cfg: CoreConfig) -> Plan:
    sft = STAGE.section_of(cfg)
    notes = [f"assistant-only loss {'on' if sft.assistant_only_loss else 'off'}, "
             f"packing {'on' if sft.packing else 'off'}, NEFTune alpha {sft.neftune_noise_alpha or 'off'}"]
    return plan_training(cfg, STAGE, notes)


def make_trainer(sft: SftConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase, data: Dataset,
                 kwargs: dict, peft: LoraConfig | None = None) -> SFTTrainer:
    """TRL's SFTTrainer with the section's loss mask, packing and NEFTune options."""
    from trl import SFTConfig, SFTTrainer

    if sft.assistant_only_loss:
        hf.check_assistant_markers(tok, "sft.tokenizer_dir")
    args = SFTConfig(**kwargs, assistant_only_loss=sft.assistant_only_loss, packing=sft.packing,
                     neftune_noise_alpha=sft.neftune_noise_alpha)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    sft = STAGE.section_of(cfg)
    train(cfg, STAGE, manifest, lambda *a: make_trainer(sft, *a))


STAGE = Stage(
    name="sft", help="supervised fine-tuning on TRL",
    sections=(SectionSpec("sft", SftConfig, "Supervised fine-tuning of an HF folder with TRL (messages, ShareGPT, "
                          "prompt/completion; full or LoRA)."),),
    plan=plan, run=run, outputs=outputs.sft, result_sections=("runtime", "sft"), after=("synth", "export"), launch=Launch.DATA_PARALLEL,
    uses_gpu=True)
