"""The `dpo` stage: TRL DPOTrainer on preference pairs (see docs/stages/posttrain.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory import outputs
from factory.config_base import CoreConfig
from factory.manifest import RunManifest
from factory.posttrain.config import DpoConfig
from factory.posttrain.training import plan_training, train
from factory.stage_api import Launch, Plan, SectionSpec, Stage

if TYPE_CHECKING:  # for annotations only
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import DPOTrainer


def plan(cfg: CoreConfig) -> Plan:
    dpo_config = STAGE.section_of(cfg)
    ref = "the LoRA base (adapters off)" if dpo_config.lora else "a frozen copy of the input model"
    return plan_training(cfg, STAGE, [f"beta {dpo_config.beta:g}, loss {dpo_config.loss_type}, reference: {ref}"])


def make_trainer(dpo_config: DpoConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase, data: Dataset,
                 kwargs: dict, peft: LoraConfig | None = None) -> DPOTrainer:
    """TRL's DPOTrainer; the reference is a frozen copy of the input model (or the LoRA base)."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**kwargs, beta=dpo_config.beta, loss_type=[dpo_config.loss_type])
    return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    dpo_config = STAGE.section_of(cfg)
    curve = train(cfg, STAGE, manifest, lambda *a: make_trainer(dpo_config, *a))
    margins = [c["rewards/margins"] for c in curve if "rewards/margins" in c]
    if margins:
        manifest.record(first_reward_margin=margins[0], last_reward_margin=margins[-1])


STAGE = Stage(
    name="dpo", help="direct preference optimization on TRL",
    sections=(SectionSpec("dpo", DpoConfig, "Direct preference optimization of an HF folder with TRL "
                          "(prompt/chosen/rejected; full or LoRA)."),),
    plan=plan, run=run, outputs=outputs.dpo, result_sections=("runtime", "dpo"), after=("synth", "export", "sft"), launch=Launch.DATA_PARALLEL,
    uses_gpu=True)
