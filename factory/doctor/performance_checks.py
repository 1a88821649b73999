"""What a GPU node must show beyond running: bf16 training that tracks fp32, the MFU of a ~1B dense model, the
MoE step time against dense at equal active parameters, MoE dispatchers and expert kernels that agree (and which
ran), and peak memory against the memory plan. The CPU tier runs the same code on tiny shapes."""

from __future__ import annotations

import torch

from factory.doctor.checks import CheckFailed, CheckSkipped, DoctorContext
from factory.doctor.probe import GIB, ProbeResult, experts_built, record_memory, train_probe
from factory.doctor.shapes import Probe
from factory.errors import ConfigError
from factory.model.build import build_gpt_model
from factory.model.build import parameter_counts
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig
from factory.runtime.config import RuntimeConfig
from factory.train.flops import flops_per_token

def _runtime(context: DoctorContext, precision: str | None = None, deterministic: bool | None = None):
    raw = context.shapes.runtime(precision)
    if deterministic is not None:
        raw["deterministic"] = deterministic
    return RuntimeConfig(**raw)


def _model(fields: dict, moe: dict | None = None):
    return ModelConfig.model_validate({**fields, **({"moe": moe} if moe else {})})


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f}B" if parameters >= 1e9 else f"{parameters / 1e6:.1f}M"


def _memory(context: DoctorContext, label: str, result: ProbeResult) -> str:
    return record_memory(context, label, result.peak_bytes, result.plan_bytes)


def precision_agreement(context: DoctorContext) -> str:
    """The same model from the same weights on the same tokens: bf16 losses within a relative tolerance of fp32's."""
    shapes = context.shapes
    if shapes.device != "cuda":
        raise CheckSkipped("bf16 training needs CUDA (Megatron's mixed-precision optimizer wraps CUDA tensors only)")
    model = _model({**shapes.model, "vocab_size": shapes.vocab_size})
    probe = Probe(model.model_dump(exclude={"moe"}), shapes.micro_batch_size, 1, 0, shapes.precision_steps)
    steps = shapes.precision_steps
    fp32 = train_probe(model, _runtime(context, "fp32"), probe, steps=steps, keep_initial=True)
    bf16 = train_probe(model, _runtime(context, "bf16"), probe, steps=steps, initial=fp32.initial)
    worst = max(abs(b - a) / a for a, b in zip(fp32.losses, bf16.losses))
    figure = (f"{steps} steps: fp32 loss {fp32.losses[0]:.3f} -> {fp32.losses[-1]:.3f}, bf16 {bf16.losses[0]:.3f} -> "
              f"{bf16.losses[-1]:.3f}; max relative difference {worst:.2%} (<= {shapes.precision_tolerance:.0%}); "
              f"bf16 {_memory(context, 'precision_agreement (bf16)', bf16)}")
    if not worst <= shapes.precision_tolerance or not fp32.losses[-1] < fp32.losses[0]:
        raise CheckFailed(figure + " (the losses must agree and fall)")
    return figure


def dense_mfu(context: DoctorContext) -> str:
    """Tokens/s, TFLOP/s and MFU of a dense Llama-shape model against the GPU's dense bf16 peak."""

    shapes, probe = context.shapes, context.shapes.mfu_probe
    model = _model(probe.model)
    result = train_probe(model, _runtime(context, deterministic=False), probe)
    flops = result.tokens_per_second * flops_per_token(model)
    where = result.decision.capabilities.device_name
    head = (f"{_count(parameter_counts(model).total)} dense, {probe.tokens_per_step:,} tokens/step, "
            f"{result.seconds_per_step * 1e3:.0f} ms/step: {result.tokens_per_second:,.0f} tokens/s, "
            f"{flops / 1e12:.1f} TFLOP/s")
    tail = f"; {_memory(context, 'dense_mfu', result)}; {result.decision.describe_fusions()}"
    if result.peak_flops is None:
        return f"{head}, MFU not computed (no dense bf16 peak known for {where}){tail}"
    mfu = flops / result.peak_flops
    figure = f"{head}, MFU {mfu:.1%} of {result.peak_flops / 1e12:.0f} TFLOP/s ({where}, floor {shapes.mfu_floor:.0%}){tail}"
    if mfu < shapes.mfu_floor:
        raise CheckFailed(figure)
    return figure


def moe_step_ratio(context: DoctorContext) -> str:
    """8 experts top-2 of half the FFN each (the same active parameters) against the dense model: step-time ratio."""

    shapes, probe = context.shapes, context.shapes.ratio_probe
    dense = _model(probe.model)
    moe_settings = {**{k: v for k, v in shapes.moe.items() if k != "num_experts"}, "num_experts": 8,
                    "router_topk": 2, "ffn_hidden_size": dense.ffn_hidden_size // 2}
    moe = _model(probe.model, moe_settings)
    router = dense.num_layers * dense.hidden_size * 8
    if parameter_counts(moe).active - router != parameter_counts(dense).active:
        raise CheckFailed("the MoE twin does not have the dense model's active parameters")
    runtime = _runtime(context, deterministic=False)
    timed = {name: train_probe(model, runtime, probe) for name, model in (("dense", dense), ("moe", moe))}
    ratio, limit = timed["moe"].seconds_per_step / timed["dense"].seconds_per_step, shapes.moe_ratio_limit
    bound = f"<= {limit:g}" if limit is not None else "not bounded on this tier"
    figure = (f"dense {timed['dense'].seconds_per_step * 1e3:.0f} ms/step, 8 experts top-2 "
              f"{timed['moe'].seconds_per_step * 1e3:.0f} ms/step at {_count(parameter_counts(dense).active)} "
              f"active: ratio {ratio:.2f} ({bound}); ran {timed['moe'].experts}; "
              f"MoE {_memory(context, 'moe_step_ratio (moe)', timed['moe'])}; "
              f"dense {_memory(context, 'moe_step_ratio (dense)', timed['dense'])}")
    if limit is not None and ratio > limit:
        raise CheckFailed(figure)
    return figure


VARIANTS = (("allgather", False), ("alltoall", False), ("alltoall", True))
"""(token dispatcher, grouped GEMM requested); the first is the reference."""


def moe_kernels(context: DoctorContext) -> str:
    """alltoall against allgather dispatch and grouped GEMM against one GEMM per expert: the same logits (fp32),
    and the modules that actually ran."""
    from factory.runtime.runtime import runtime_session
    from factory.train import checkpoint as ckpt

    shapes = context.shapes
    base = {**shapes.model, "num_layers": min(4, shapes.model["num_layers"]), "vocab_size": 256}
    tokens = torch.randint(0, 256, (2, base["seq_length"]), generator=torch.Generator().manual_seed(3))
    checkpoint = context.work_dir / "moe-kernels"
    reference, figures, bad = None, [], []
    for dispatcher, grouped in VARIANTS:
        name = f"{dispatcher}{' + grouped GEMM' if grouped else ''}"
        model_cfg = _model(base, {**shapes.moe, "token_dispatcher": dispatcher, "grouped_gemm": grouped})
        with runtime_session(_runtime(context, "fp32"), ParallelConfig()) as runtime:
            try:
                model = build_gpt_model(model_cfg, runtime)
            except ConfigError as e:  # alltoall on CPU
                figures.append(f"{name}: not run ({e.problems[0].split(': ', 1)[1]})")
                continue
            if reference is None:
                ckpt.save(checkpoint, 0, model, model_cfg, runtime)
            else:
                ckpt.load(checkpoint, model, runtime, restore_rng=False)
            with torch.no_grad():
                seq = tokens.shape[1]
                positions = torch.arange(seq, device=runtime.device).expand_as(tokens)
                logits = model.eval()(tokens.to(runtime.device), positions, None).float().cpu()
        ran = experts_built(model)
        if reference is None:
            reference = logits
            figures.append(f"{name}: ran {ran} (reference)")
            continue
        diff = (logits - reference).abs().max().item()
        figures.append(f"{name}: ran {ran}, max |dlogits| {diff:.3g}")
        if not diff <= shapes.logit_tolerance:
            bad.append(f"{name} differs by more than {shapes.logit_tolerance:g}")
    figure = "; ".join(figures)
    if bad:
        raise CheckFailed(f"{figure} ({'; '.join(bad)})")
    return figure


def memory_plan(context: DoctorContext) -> str:
    """Each training check's peak GPU memory over the memory plan's figure for its shape (without the plan's CUDA
    reserve, which the allocator does not count), within the tier's band."""
    rows = context.artifacts.get("memory", {})
    if not rows:
        raise CheckSkipped("no GPU memory was measured (the CPU plan is measured by tests/slow/test_memory_plan.py)")
    low, high = context.shapes.memory_band
    figures = [f"{label} {peak / GIB:.2f}/{plan / GIB:.2f} GiB = {peak / plan:.2f}" for label, (peak, plan) in rows.items()]
    outside = [label for label, (peak, plan) in rows.items() if not low <= peak / plan <= high]
    figure = f"measured/planned: {'; '.join(figures)} (band {low:g}-{high:g})"
    if outside:
        raise CheckFailed(f"{figure}; outside: {', '.join(outside)}")
    return figure
