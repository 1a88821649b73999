"""The `dpo` stage: TRL DPOTrainer on preference pairs (see docs/stages/posttrain.md)."""

from __future__ import annotations

from factory.config import FactoryConfig
from factory.manifest import RunManifest
from factory.posttrain.config import DpoConfig
from factory.posttrain.training import plan_training, section, train
from factory.runner import Plan


def plan(cfg: FactoryConfig) -> Plan:
    dc = section(cfg, "dpo")
    ref = "the LoRA base (adapters off)" if dc.lora else "a frozen copy of the input model"
    return plan_training(cfg, "dpo", [f"beta {dc.beta:g}, loss {dc.loss_type}, reference: {ref}"])


def make_trainer(dc: DpoConfig, model, tok, data, kwargs: dict, peft=None):
    """TRL's DPOTrainer; the reference is a frozen copy of the input model (or the LoRA base)."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**kwargs, beta=dc.beta, loss_type=[dc.loss_type])
    return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)


def run(cfg: FactoryConfig, plan: Plan, manifest: RunManifest) -> None:
    dc = section(cfg, "dpo")
    curve = train(cfg, "dpo", manifest, lambda *a: make_trainer(dc, *a))
    margins = [c["rewards/margins"] for c in curve if "rewards/margins" in c]
    if margins:
        manifest.record(first_reward_margin=margins[0], last_reward_margin=margins[-1])
