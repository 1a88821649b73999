"""Checks of the stage chain on the doctor's own data: pretrain with save/resume, upcycle, export to stock HF."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from factory.doctor import configs, workspace
from factory.doctor.checks import CheckFailed, DoctorContext
from factory.doctor.probe import stage_memory
from factory.errors import DataError
from factory.model.build import build_gpt_model
from factory.registry import STAGES
from factory.runner import run_stage
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.runtime.memory import reset_peak_memory
from factory.strict_json import read_json_object



def data(context: DoctorContext) -> str:
    """The tokenizer and pack stages make the doctor's inputs (or a prepared `--data` folder is read)."""
    shapes = context.shapes
    if context.data_dir is not None:
        root = workspace.check_prepared(Path(context.data_dir))
    else:
        root = workspace.build(context.work_dir / "data", shapes.vocab_size, shapes.documents)
    context.artifacts["data"] = root
    context.artifacts["vocab_size"] = workspace.tokenizer_size(root)
    counts = read_json_object(root / "pack" / "token_counts.json", DataError, "the pack stage's token counts")
    return f"tokenizer of {context.artifacts['vocab_size']} ids, packed {_total_tokens(counts):,} tokens"


def _total_tokens(counts) -> int:
    if isinstance(counts, dict):
        return sum(_total_tokens(v) for v in counts.values()) if not {"tokens"} <= counts.keys() else counts["tokens"]
    return 0


def losses(run_dir: Path) -> list[float]:
    """The logged losses of the pretrain run in `run_dir`."""
    lines = (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def pretrain_resume(context: DoctorContext) -> str:
    """A straight run and a run saved at half way and resumed give the same loss curve; the loss falls."""

    shapes, root = context.shapes, context.artifacts["data"]
    vocab, total, half = context.artifacts["vocab_size"], shapes.train_iters, shapes.train_iters // 2
    straight, split = context.work_dir / "straight", context.work_dir / "split"
    reset_peak_memory()
    straight_cfg = configs.pretrain(shapes, root, straight, vocab, total, total, half)
    run_stage(STAGES["pretrain"], straight_cfg)
    memory = stage_memory(context, "pretrain_resume", straight_cfg)
    run_stage(STAGES["pretrain"], configs.pretrain(shapes, root, split, vocab, half, total, half))
    run_stage(STAGES["pretrain"], configs.pretrain(shapes, root, split, vocab, total, total, half))
    first, second = losses(straight), losses(split)
    if len(first) != total or len(second) != total:
        raise CheckFailed(f"logged {len(first)} and {len(second)} losses, expected {total} each")
    diff = max(abs(a - b) for a, b in zip(first, second))
    context.artifacts["dense_checkpoint"] = straight / "pretrain" / "checkpoints"
    figure = (f"loss {first[0]:.3f} -> {first[-1]:.3f} over {total} steps, resumed at {half}: max |dloss| {diff:.3g}; "
              f"{memory}")
    if diff > shapes.resume_tolerance or not first[-1] < first[0]:
        raise CheckFailed(f"{figure} (allowed {shapes.resume_tolerance:g}, loss must fall)")
    return figure


def upcycle(context: DoctorContext) -> str:
    """The upcycle stage turns the pretrained checkpoint into an MoE equal to it at step 0."""

    shapes = context.shapes
    raw = configs.base(shapes, context.work_dir / "upcycle-run", context.artifacts["vocab_size"])
    moe = {k: v for k, v in shapes.moe.items() if k in ("num_experts", "router_topk")}
    raw["upcycle"] = {"source": str(context.artifacts["dense_checkpoint"]), "mode": "copy",
                      "moe": {**moe, "token_dispatcher": shapes.moe["token_dispatcher"]},
                      "tolerance": shapes.logit_tolerance}
    manifest = run_stage(STAGES["upcycle"], configs.validated(raw))
    diff = manifest.metrics["max_abs_logit_diff"]
    context.artifacts["moe_checkpoint"] = manifest.out_dir
    if not diff <= shapes.logit_tolerance:
        raise CheckFailed(f"max |dlogits| {diff:.3g} > {shapes.logit_tolerance:g}")
    return f"{moe['num_experts']} experts top-{moe['router_topk']}: step-0 max |dlogits| {diff:.3g} (fp32)"


def megatron_logits(checkpoint: Path, tokens: torch.Tensor, runtime_cfg: RuntimeConfig) -> torch.Tensor:
    """fp32 logits of a whole Megatron checkpoint (padded vocab dropped), built and loaded as training does."""
    from factory.runtime.runtime import runtime_session
    from factory.train import checkpoint as ckpt

    info = ckpt.read_info(checkpoint)
    with runtime_session(runtime_cfg, ParallelConfig()) as runtime:
        model = build_gpt_model(runtime.runnable(info.model), runtime)
        ckpt.load(info.path, model, runtime, restore_rng=False)
        positions = torch.arange(tokens.shape[1], device=runtime.device).expand_as(tokens)
        with torch.no_grad():
            logits = model.eval()(tokens.to(runtime.device), positions, None)
        return logits[..., : info.model.vocab_size].float().cpu()


def hf_model_logits(folder: Path, tokens: torch.Tensor, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Logits of the folder loaded whole by stock transformers (no remote code, offline)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True,
                                                 trust_remote_code=False).to(device)
    with torch.no_grad():
        return model.eval()(tokens.to(device)).logits.float().cpu()


def export(context: DoctorContext) -> str:
    """The export stage writes an HF folder whose logits under stock transformers equal the checkpoint's."""

    shapes, figures = context.shapes, []
    checkpoint = context.artifacts["moe_checkpoint"]
    tokens = torch.randint(0, context.artifacts["vocab_size"], (2, min(32, shapes.model["seq_length"])),
                           generator=torch.Generator().manual_seed(7))
    for dtype in shapes.export_dtypes:
        raw = configs.base(shapes, context.work_dir / f"export-{dtype}", context.artifacts["vocab_size"])
        raw["export"] = {"checkpoint": str(checkpoint), "dtype": dtype,
                         "tokenizer_dir": str(context.artifacts["data"] / "tokenizer"),
                         "probe": {"tolerance": max(shapes.logit_tolerance, 1e-5)}}
        manifest = run_stage(STAGES["export"], configs.validated(raw))
        folder = manifest.out_dir
        torch_dtype = getattr(torch, dtype)
        runtime_cfg = RuntimeConfig(**shapes.runtime("fp32" if dtype == "float32" else "bf16"))
        reference = megatron_logits(checkpoint, tokens, runtime_cfg)
        diff = (hf_model_logits(folder, tokens, torch_dtype, shapes.device) - reference).abs().max().item()
        bound = shapes.logit_tolerance_for("fp32" if dtype == "float32" else "bf16")
        figures.append(f"{manifest.metrics['architecture']} {dtype}: max |dlogits| {diff:.3g} (<= {bound:g})")
        if not diff <= bound:
            raise CheckFailed("; ".join(figures))
    return "; ".join(figures)
