"""DPO with LoRA on the MoE folder: the implicit reward margin grows on the training pairs."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from factory.posttrain.config import DatasetSpec
from factory.posttrain.data import RowPolicy, load_mixture
from factory.runner import run_stage
from factory.registry import STAGES
from tests.posttrain.conftest import DPO_DATA, copy_model, post_config

BETA = 0.1


@torch.no_grad()
def completion_logp(model, tok, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of log p(completion tokens | prompt) under the chat template, computed without TRL."""
    prompt_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + completion, return_dict=True)["input_ids"]
    assert full[:len(prompt_ids)] == prompt_ids
    ids = torch.tensor([full])
    logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, 1:]
    picked = logp.gather(-1, targets[:, None])[:, 0]
    return picked[len(prompt_ids) - 1:].sum().item()


def reward_margin(policy, ref, tok, pairs) -> float:
    """Mean of beta * [(log pi/ref)(chosen) - (log pi/ref)(rejected)] over the pairs."""
    total = 0.0
    for p in pairs:
        ratio = {k: completion_logp(policy, tok, p["prompt"], p[k]) - completion_logp(ref, tok, p["prompt"], p[k])
                 for k in ("chosen", "rejected")}
        total += BETA * (ratio["chosen"] - ratio["rejected"])
    return total / len(pairs)


def test_dpo_lora_on_moe_grows_the_reward_margin_and_output_loads(mixtral_dir, tmp_path):
    model_in = copy_model(mixtral_dir, tmp_path / "sft" / "hf")  # the default input: the sft output
    cfg = post_config(tmp_path, dpo={"datasets": DPO_DATA, "learning_rate": 2e-2, "lr_scheduler": "constant",
                                     "max_steps": 6, "global_batch_size": 4, "micro_batch_size": 4,
                                     "max_length": 128, "beta": BETA, "lora": {"r": 8, "alpha": 16, "dropout": 0}})
    manifest = run_stage(STAGES["dpo"], cfg).to_dict()
    out = tmp_path / "dpo" / "hf"
    m = manifest["metrics"]
    assert m["steps"] == 6 and m["last_reward_margin"] > m["first_reward_margin"], m
    curve = json.loads((out / "loss_curve.json").read_text())
    assert curve[-1]["loss"] < curve[0]["loss"]
    policy = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)  # LoRA merged: a plain Mixtral
    ref = AutoModelForCausalLM.from_pretrained(model_in, local_files_only=True)
    assert type(policy).__name__ == "MixtralForCausalLM" and not (out / "adapter").exists()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    pairs = list(load_mixture([DatasetSpec(**d) for d in DPO_DATA], RowPolicy("dpo"), seed=0).dataset)
    assert reward_margin(ref, ref, tok, pairs) == 0.0
    assert reward_margin(policy, ref, tok, pairs) > 0.05
