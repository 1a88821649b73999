"""The `pretrain` and `cpt` stages: one training engine (factory/train/engine.py), two config sections."""

from __future__ import annotations

# torch and megatron are imported inside plan/run: the registry imports every stage module at start-up.
from factory import outputs
from factory.config_base import CoreConfig
from factory.errors import ConfigError
from factory.manifest import RunManifest
from factory.model.build import parameter_counts
from factory.schema import rule
from factory.stage_api import Launch, Plan, SectionSpec, Stage
from factory.train import budget
from factory.train import stop
from factory.train.checkpoint_root import iteration_of
from factory.train.config import TrainConfig
from factory.train.flops import flops_per_token
from factory.train.memory import memory_problems, over_limit, plan_memory, planned_decision, training_shape


def plan_training(cfg: CoreConfig, stage: Stage) -> Plan:
    """The run's plan; `complete` when its checkpoint already holds an intact iteration `train_iters`.

    Cost: reading the committed iteration number is cheap (the tracker and folder names; a tracker naming a
    missing folder falls back with a warning). Only when that number is `train_iters`, and the plan would say
    "nothing to do", is the final iteration verified in full (sizes and xxh3-128 checksums of every file,
    docs/stages/train.md gives the rate), since a damaged final iteration must be trained again; every plan
    process reads it, the run's processes share that work (`checkpoint.newest_intact`)."""
    from factory.train import checkpoint as ckpt

    section: TrainConfig = stage.section_of(cfg)
    declared = stage.outputs(cfg)
    out, root = declared.dir, declared.checkpoints
    blend = section.blend_file or outputs.pack(cfg).blend_file
    blends = list(dict.fromkeys([p.blend_file or blend for p in section.phases] or [blend]))
    reads = [*blends, (section.tokenizer_dir or outputs.tokenizer(cfg).dir) / "tokenizer.model"]
    notes = [f"parallel: {cfg.parallel.describe()}; data-parallel size = world / "
             f"{cfg.parallel.model_parallel_size} (model-parallel ranks)",
             f"batch: global {section.global_batch_size} x seq = tokens per step; "
             f"micro-batch {section.micro_batch_size}",
             f"schedule: {section.schedule.style}, warmup {section.schedule.warmup_iters}, "
             f"{section.train_iters} iterations"]
    resume = ckpt.latest_iteration(root)
    model = cfg.model
    complete = ""
    warnings: list[str] = []
    if resume is not None and resume > section.train_iters:
        raise ConfigError(f"{stage.name}.train_iters={section.train_iters}: below iteration {resume}, which its "
                          f"checkpoint {root} already reached; set train_iters >= {resume} to continue the run")
    if resume == section.train_iters:
        resume = iteration_of(ckpt.newest_intact(root))  # the full check, see above
        if resume == section.train_iters:
            complete = f"{stage.name}: already at iteration {resume} of {section.train_iters} ({root})"
    if resume is not None:
        notes.append(f"resumes from {root} iteration {resume}")
    elif stage is CPT:
        source = section.init_from or outputs.pretrain(cfg).checkpoints
        reads.append(source)
        notes.append(f"starts from {source} ({'fresh' if section.reset_optimizer else 'kept'} optimizer state)")
        if source.exists():
            model = ckpt.read_info(source).model
    notes.append(budget.lr_schedule(section))
    if model is not None:
        seq = model.seq_length
        total = section.train_iters * section.global_batch_size * seq
        flops = flops_per_token(model)
        notes.append(f"tokens: {total:,} ({section.global_batch_size * seq:,} per step); model FLOPs/token {flops:.3e}")
        pack_blend = outputs.pack(cfg).blend_file
        start_tokens = 0.0
        for i, p in enumerate(section.phases or [None]):
            end = p.until_tokens if p is not None and i < len(section.phases) - 1 else total
            name = p.phase if p else section.phase
            phase_blend = (p.blend_file if p else None) or blend
            share = budget.synthetic_share(cfg, phase_blend, name, pack_blend)
            notes.append(f"phase {i}: {name or '(first)'} of {phase_blend}, tokens "
                         f"{start_tokens:,.0f} -> {end:,.0f} ({(end - start_tokens) / 1e9:,.1f}B), {share}")
            if repeats := budget.repetition(phase_blend, name, end - start_tokens):
                warnings.append(repeats)
            start_tokens = end
        decision = planned_decision(cfg, section, stage.name, model)
        notes += [f"execution on {decision.capabilities.describe()}: {decision.describe_precision()}",
                  decision.describe_fusions(), decision.describe_overlap()]
        warnings += list(decision.warnings)
        shape = training_shape(cfg, section, stage.name, model)
        memory = plan_memory(model, cfg.parallel, shape)
        notes.append(memory.describe())
        notes.append(budget.checkpoint_disk(section, parameter_counts(model, cfg.parallel.tensor).total,
                                            shape.param_bytes))
        if memory.shape.on_gpu:
            notes.append(budget.gpu_hours(total, flops, memory.shape.world_size, fp8=decision.fp8 is not None))
        if problems := over_limit(cfg, stage.name, memory):
            raise ConfigError(problems)
    writes = [root, out / "metrics.jsonl", out / "data_cache"]
    writes += [out / "tensorboard"] if section.tensorboard else []
    return Plan(output_dir=out, reads=reads, writes=writes, notes=notes, warnings=warnings, complete=complete)


def run_training(cfg: CoreConfig, plan: Plan, manifest: RunManifest, stage: Stage) -> None:
    with stop.listening():  # from before the engine's imports: a stop signal during start-up is kept
        from factory.train.engine import train

        manifest.record(**train(cfg, stage.name, stage.section_of(cfg), plan.output_dir, manifest))


def pretrain_problems(cfg: CoreConfig) -> list[str]:
    out: list[str] = []
    rule(out, cfg.pretrain.optimizer.lr is not None, "pretrain.optimizer.lr", None,
         "required for pretraining (only cpt can inherit the checkpoint's LR)")
    return out + memory_problems(cfg, "pretrain")


def cpt_problems(cfg: CoreConfig) -> list[str]:
    return memory_problems(cfg, "cpt")


PRETRAIN = Stage(
    name="pretrain", help="pretrain a dense or MoE model on Megatron-Core",
    sections=(SectionSpec("pretrain", TrainConfig, "Pretraining from scratch on the packed blend."),),
    plan=lambda cfg: plan_training(cfg, PRETRAIN), outputs=outputs.pretrain,
    run=lambda cfg, plan, manifest: run_training(cfg, plan, manifest, PRETRAIN),
    result_sections=("runtime", "parallel", "model", "pretrain"), after=("tokenizer", "pack"), resumes=True,
    launch=Launch.MEGATRON, uses_gpu=True, checks=pretrain_problems)

CPT = Stage(
    name="cpt", help="continue pretraining from a checkpoint",
    sections=(SectionSpec("cpt", TrainConfig,
                          "Continued pretraining from a checkpoint (pretrain, upcycle or import output)."),),
    plan=lambda cfg: plan_training(cfg, CPT), outputs=outputs.cpt,
    run=lambda cfg, plan, manifest: run_training(cfg, plan, manifest, CPT),
    result_sections=("runtime", "parallel", "model", "cpt"),
    after=("tokenizer", "pack", "pretrain", "synth", "upcycle", "import"), resumes=True, launch=Launch.MEGATRON,
    uses_gpu=True, checks=cpt_problems)
