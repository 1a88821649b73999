"""Plan and run of the `pretrain` and `cpt` stages (one engine, two config sections)."""

from __future__ import annotations

from factory.config import FactoryConfig
from factory.errors import ConfigError
from factory.manifest import RunManifest
from factory.runner import Plan


def plan_training(cfg: FactoryConfig, stage: str) -> Plan:
    from factory.train import checkpoint as ckpt
    from factory.train.engine import output_dir
    from factory.train.flops import flops_per_token

    tc = getattr(cfg, stage)
    if tc is None:
        raise ConfigError(f"{stage}: the config has no '{stage}' section")
    out = output_dir(cfg, stage)
    blend = tc.blend_file or cfg.stage_dir("pack") / "blend.json"
    reads = [blend, (tc.tokenizer_dir or cfg.stage_dir("tokenizer")) / "tokenizer.model"]
    notes = [f"parallel: {cfg.parallel.describe()}; data-parallel size = world / "
             f"{cfg.parallel.model_parallel_size} (model-parallel ranks)",
             f"batch: global {tc.global_batch_size} x seq = tokens per step; micro-batch {tc.micro_batch_size}",
             f"schedule: {tc.schedule.style}, warmup {tc.schedule.warmup_iters}, {tc.train_iters} iterations"]
    resume = ckpt.latest_iteration(out / "checkpoints")
    model = cfg.model
    if resume is not None:
        notes.append(f"resumes from {out / 'checkpoints'} iteration {resume}")
    elif stage == "cpt":
        source = tc.init_from or cfg.stage_dir("pretrain") / "checkpoints"
        reads.append(source)
        notes.append(f"starts from {source} ({'fresh' if tc.reset_optimizer else 'kept'} optimizer state)")
        if source.exists():
            model = ckpt.read_info(source).model
    if model is not None:
        seq = model.seq_length
        notes.append(f"tokens: {tc.train_iters * tc.global_batch_size * seq:,} "
                     f"({tc.global_batch_size * seq:,} per step); model FLOPs/token {flops_per_token(model):.3e}")
    return Plan(output_dir=out, reads=reads, writes=[out / "checkpoints", out / "metrics.jsonl"], notes=notes)


def run_training(cfg: FactoryConfig, plan: Plan, manifest: RunManifest, stage: str) -> None:
    from factory.train import stop

    with stop.listening():  # from before the engine's imports: a stop signal during start-up is kept
        from factory.train.engine import train

        manifest.record(**train(cfg, stage, manifest))
