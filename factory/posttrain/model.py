"""HF model folders for post-training: checks, loading, TRL arguments, publishing the output folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.config_base import CoreConfig
from factory.errors import CheckpointError, ConfigError
from factory.hf.tokenizer_files import make_portable, set_eos
from factory.io import atomic_write_json, publish_dir
from factory.manifest import RunManifest
from factory.posttrain.config import LoraSettings, TrainSettings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase, Trainer

# torch and transformers are imported inside the functions: the stage registry imports this module at
# every start-up.

log = logging.getLogger(__name__)
CURVE_KEYS = ("loss", "learning_rate", "grad_norm", "aux_loss", "rewards/margins", "rewards/accuracies")


def check_causal_lm(folder: Path):
    """The folder's config if it holds a causal LM (e.g. LlamaForCausalLM, MixtralForCausalLM), else one line."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{folder}: unreadable config.json ({str(e).splitlines()[0]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    names = set(CAUSAL.values())
    if config.model_type not in CAUSAL or (archs and not any(a in names for a in archs)):
        raise CheckpointError(f"{folder}: not a causal LM (model_type={config.model_type}, architectures="
                              f"{','.join(archs) or 'none'}); expected a *ForCausalLM folder such as "
                              f"LlamaForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM")
    return config


def describe(config: PreTrainedConfig) -> str:
    """Architecture and parameter count of an HF config, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"


def load_tokenizer(folder: Path, key: str):
    """The folder's HF tokenizer; a one-line error when it has no chat template."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer_config.json").is_file():
        raise ConfigError(f"{key}: {folder} has no tokenizer_config.json (HF tokenizer files expected)")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tok.chat_template:
        raise ConfigError(f"{key}: the tokenizer in {folder} has no chat template; export it with the tokenizer "
                          f"stage (tokenizer/hf.py) or point {key} at a folder that has one")
    return tok


def check_assistant_markers(tok: PreTrainedTokenizerBase, key: str) -> None:
    """Assistant-only loss needs `{% generation %}` in the template, or one TRL knows how to patch."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tok.chat_template):
        return
    try:
        get_training_chat_template(tok)
    except ValueError:
        raise ConfigError(f"{key}: the chat template has no {{% generation %}} markers, so the assistant tokens "
                          f"cannot be found; use the tokenizer stage's template or set assistant_only_loss=false"
                          ) from None


def device_and_dtype(cfg: CoreConfig) -> tuple[bool, torch.dtype]:
    """(use_cpu, dtype) from the runtime section, resolved by the runtime module (auto: CUDA + bf16 on GPUs)."""
    from factory.runtime.runtime import resolve_device, resolve_dtype

    device = resolve_device(cfg.runtime)
    return device.type == "cpu", resolve_dtype(cfg.runtime, device)


def load_model(folder: Path, dtype: torch.dtype, tokenizer_size: int):
    """AutoModelForCausalLM with MoE router logits on (so the load-balancing loss is trained)."""
    from transformers import AutoModelForCausalLM

    config = check_causal_lm(folder)
    text = config.get_text_config()
    if tokenizer_size > text.vocab_size:
        raise CheckpointError(f"{folder}: vocab_size {text.vocab_size} is smaller than the tokenizer "
                              f"({tokenizer_size} ids)")
    extra = {"output_router_logits": True} if hasattr(text, "output_router_logits") else {}
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True, **extra)


def lora_config(lora: LoraSettings | None):
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def trainer_kwargs(cfg: CoreConfig, settings: TrainSettings, work_dir: Path, key: str) -> dict[str, Any]:
    """TrainingArguments shared by SFTConfig and DPOConfig; the global batch sets gradient accumulation."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    per_step = settings.micro_batch_size * world
    if settings.global_batch_size % per_step:
        raise ConfigError(f"{key}.global_batch_size={settings.global_batch_size}: must be a multiple of "
                          f"micro_batch_size x world size ({settings.micro_batch_size} x {world})")
    import torch

    cpu, dtype = device_and_dtype(cfg)
    return dict(
        output_dir=str(work_dir), per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.global_batch_size // per_step,
                learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=settings.warmup_steps,
                weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm, num_train_epochs=settings.epochs,
                max_steps=settings.max_steps or -1,
        max_length=settings.max_length, logging_steps=settings.logging_steps,
                save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500, report_to=[], seed=cfg.runtime.seed, use_cpu=cpu,
        bf16=dtype == torch.bfloat16, gradient_checkpointing=settings.gradient_checkpointing,
        router_aux_loss_coef=settings.router_aux_loss_coef, disable_tqdm=True, dataloader_num_workers=0,
        deepspeed=str(settings.deepspeed) if settings.deepspeed else None)


def loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per-logging-step training metrics (loss, LR, grad norm, DPO reward margins)."""
    return [{"step": e["step"], **{k: e[k] for k in CURVE_KEYS if k in e}} for e in log_history if "loss" in e]


def save_trained(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, base_dir: Path, dtype: torch.dtype,
                 final: Path) -> None:
    """Write the trained model to `final`: full weights, or LoRA merged into the base weights."""
    from peft import PeftModel

    if isinstance(trainer.model, PeftModel):  # save the adapter on every rank (ZeRO-3 gathers it)
        trainer.save_model(str(final / "adapter"))
        if trainer.accelerator.is_main_process:
            merged = PeftModel.from_pretrained(load_model(base_dir, dtype, len(tokenizer)),
                                               final / "adapter").merge_and_unload()
            merged.save_pretrained(final)
            tokenizer.save_pretrained(final)
            shutil.rmtree(final / "adapter")
    else:
        trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()


def publish(trainer: Trainer, final: Path, out: Path, manifest: RunManifest, stage: str, end_ids: list[int],
            eos_token: str | None, tokenizer_dir: Path) -> list[dict[str, float]]:
    """Move `final` to `out` (main process; an earlier model there is moved aside, never deleted), write
    loss_curve.json and record the curve's ends. Generation ends on `end_ids` (the chat turn's end and EOS);
    `eos_token` (the chat template's end marker) becomes the folder's EOS."""
    curve = loss_curve(trainer.state.log_history)
    if trainer.accelerator.is_main_process:
        atomic_write_json(final / "loss_curve.json", curve)
        _keep_sentencepiece_model(tokenizer_dir, final)
        _portable_chat_folder(final, end_ids, eos_token)
        publish_dir(final, out)
    trainer.accelerator.wait_for_everyone()
    manifest.add_output(out, role="hf_model")
    if curve:
        manifest.record(steps=trainer.state.global_step, first_loss=curve[0]["loss"], last_loss=curve[-1]["loss"],
                        min_loss=min(c["loss"] for c in curve))
    log.info("%s: %d steps, loss %s; HF folder %s", stage, trainer.state.global_step,
             " -> ".join(f"{c['loss']:.4f}" for c in (curve[:1] + curve[-1:])), out)
    return curve


def _keep_sentencepiece_model(tokenizer_dir: Path, folder: Path) -> None:
    """transformers saves tokenizer.json only; the SentencePiece model it came from travels too, because
    llama.cpp's converter reads a SentencePiece tokenizer from it (without it, it takes tokenizer.json for a
    GPT-2-style BPE and tokenizes differently)."""
    src = Path(tokenizer_dir) / "tokenizer.model"
    if src.is_file() and not (folder / "tokenizer.model").exists():
        shutil.copy2(src, folder / "tokenizer.model")


def _portable_chat_folder(folder: Path, end_ids: list[int], eos_token: str | None) -> None:
    """The tokenizer and config files every transformers version reads, a generation config that ends the
    reply, and the chat end marker as EOS in every file that names one (a base model's EOS is the document
    separator; a chat model's is the end of its turn, which llama.cpp and vLLM read from these files)."""
    from factory.convert.hf_config import write_legacy_fields

    if eos_token:
        set_eos(folder, eos_token)
    make_portable(folder)
    write_legacy_fields(folder)
    path = folder / "generation_config.json"
    if path.is_file() and end_ids:
        config = json.loads(path.read_text(encoding="utf-8"))
        config["eos_token_id"] = end_ids[0] if len(end_ids) == 1 else end_ids
        atomic_write_json(path, config)
