"""What a training section will spend, as `--dry-run` prints it: LR schedule, synthetic share per phase, GPU-hours.

No torch: the pipeline's dry run prints these for every training stage before anything is queued.
"""

from __future__ import annotations

from pathlib import Path

from factory.config_base import CoreConfig
from factory.data.indexed import token_count
from factory.train.config import TrainConfig
from factory.train.blend import blend_phases

MAX_USEFUL_EPOCHS = 4
"""Muennighoff et al. 2023 (Scaling Data-Constrained Language Models): up to ~4 epochs, repeated tokens are
worth almost as much as new ones; beyond that their value decays quickly."""
PLANNING_PEAK_FLOPS = 989e12
"""H100 SXM dense bf16 peak (docs/sources.md), the GPU the GPU-hour estimate assumes."""
PLANNING_MFU = 0.40
"""Model FLOPs utilization the estimate assumes: Megatron-LM reaches up to 47% on H100, an 8-expert top-2
upcycle trained at 46.8% (docs/sources.md); 40% leaves room for a real cluster's stragglers and restarts."""
PLANNING_FP8_SPEEDUP = 1.35
"""Throughput of an FP8 run over bf16 the estimate assumes: LLM-jp-3 172B reported 545-553 TFLOP/s per H100 in
FP8 hybrid against about 400 in bf16 (docs/sources.md), 1.36-1.38x."""


def lr_schedule(train: TrainConfig) -> str:
    o, s = train.optimizer, train.schedule
    peak = f"{o.lr:.3g}" if o.lr is not None else "the starting checkpoint's last LR (inherited)"
    low = f"{o.min_lr:.3g}" if o.min_lr is not None else "peak / 10"
    decay = s.decay_iters or train.train_iters
    shape = f"{s.style}, decay over {decay:,} iterations" if s.style != "constant" else "constant"
    if s.style == "wsd":
        shape += f" (the last {s.wsd_decay_iters:,} {s.wsd_decay_style})"
    return f"LR: peak {peak}, min {low}, warmup {s.warmup_iters:,} iterations, {shape}"


def synthetic_share(cfg: CoreConfig, blend_file: Path, phase: str | None, pack_blend: Path) -> str:
    """Share of synthetic data (datasets named synth*) in a phase: read from its blend.json where it exists,
    else from this config's blend section when the pack stage of this run writes that file."""
    blend_file = Path(blend_file)
    if blend_file.is_file():
        phases = {p.name: [(Path(prefix).name, weight) for prefix, weight in zip(p.prefixes, p.weights)]
                  for p in blend_phases(blend_file)}
    elif blend_file == pack_blend and getattr(cfg, "blend", None) is not None:
        phases = {p.name: [(e.dataset, e.weight) for e in p.datasets] for p in cfg.blend.phases}
    else:
        return f"synthetic share: known once {blend_file} exists"
    name = phase or next(iter(phases))
    if name not in phases:
        return f"no phase {name} in {blend_file}"
    pairs = phases[name]
    if any(weight is None for _, weight in pairs):
        return "synthetic share: from packed token counts (repeat), known after pack"
    total = sum(weight for _, weight in pairs)
    synthetic = sum(weight for dataset, weight in pairs if dataset.startswith("synth"))
    return f"synthetic {synthetic / total:.0%}"


def repetition(blend_file: Path, phase: str | None, tokens: float) -> str | None:
    """One warning line when a phase's token budget reads one of its datasets more than MAX_USEFUL_EPOCHS
    times (its blend weight x the phase's tokens over the dataset's packed tokens); None when it does not,
    or while the blend file or its datasets do not exist yet (before pack)."""
    if not Path(blend_file).is_file():
        return None
    phases = {p.name: p for p in blend_phases(Path(blend_file))}  # a damaged file is one DataError line
    chosen = phases.get(phase) if phase is not None else next(iter(phases.values()))
    if chosen is None:
        return None
    try:
        data = [token_count(prefix) for prefix in chosen.prefixes]
    except (OSError, StopIteration):  # not packed yet, or an index header of another format
        return None
    total = sum(chosen.weights)
    reads = [(tokens * w / total, prefix, n) for w, prefix, n in zip(chosen.weights, chosen.prefixes, data)]
    share, prefix, size = max(reads, key=lambda r: r[0] / r[2] if r[2] else float("inf"))
    epochs = share / size if size else float("inf")
    if epochs <= MAX_USEFUL_EPOCHS:
        return None
    return (f"phase {chosen.name} reads {Path(prefix).name} ~{epochs:,.0f} times ({share:,.0f} training tokens "
            f"over {size:,} tokens of data); beyond {MAX_USEFUL_EPOCHS} epochs repeated tokens add little "
            f"(Muennighoff et al. 2023): add data to the phase or give it fewer tokens")


def gpu_hours(tokens: float, flops_per_token: float, gpus: int, fp8: bool = False) -> str:
    """The GPU-hours line; MFU is counted against the bf16 peak also for FP8 (as published FP8 figures are), so
    an FP8 run's estimate divides by its planning speed-up."""
    speedup = PLANNING_FP8_SPEEDUP if fp8 else 1.0
    hours = tokens * flops_per_token / (PLANNING_PEAK_FLOPS * PLANNING_MFU * speedup) / 3600
    how = f"{PLANNING_MFU:.0%} MFU" + (f" x {PLANNING_FP8_SPEEDUP:g} for FP8" if fp8 else "")
    return (f"compute: {tokens * flops_per_token:.3g} model FLOPs = {hours:,.0f} H100 GPU-hours at {how} "
            f"({hours / gpus / 24:,.1f} days on {gpus} GPUs)")


def kept_iterations(train: TrainConfig) -> tuple[list[int], list[int]]:
    """(the most recent saves retention keeps, the older ones it keeps for keep_every) at the end of the run."""
    c, end = train.checkpoint, train.train_iters
    saved = sorted({*range(c.save_interval or end, end + 1, c.save_interval or end), end})
    recent = saved[-c.keep_last:]
    every = [it for it in saved[:-c.keep_last] if c.keep_every and it % c.keep_every == 0]
    return recent, every


def checkpoint_disk(train: TrainConfig, parameters: int, param_bytes: int) -> str:
    """Size of one checkpoint and of all a run keeps: model weights at the training precision, and the
    optimizer's fp32 state (Adam moments, plus the fp32 master copy under bf16): params x 14 bytes in bf16."""
    per_param = param_bytes + (12 if param_bytes == 2 else 8)
    full, model = parameters * per_param, parameters * param_bytes
    recent, every = kept_iterations(train)
    with_optimizer = train.checkpoint.keep_every_optimizer
    total = len(recent) * full + len(every) * (full if with_optimizer else model)
    other = len(recent) * full + len(every) * (model if with_optimizer else full)
    return (f"checkpoints: {_bytes(full)} each (model {_bytes(model)} + optimizer state {_bytes(full - model)}: "
            f"{_count(parameters)} params x {per_param} bytes); kept at the end: the last {len(recent)} + "
            f"{len(every)} for keep_every ({'with' if with_optimizer else 'without'} optimizer state) = "
            f"{_bytes(total)} ({_bytes(other)} with checkpoint.keep_every_optimizer={str(not with_optimizer).lower()})")


def _count(n: float) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e9 else f"{n / 1e6:,.2f}M"


def _bytes(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n / 1e3:,.1f} kB"
