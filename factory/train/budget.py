"""What a training section will spend, as `--dry-run` prints it: LR schedule, synthetic share per phase, GPU-hours.

No torch: the pipeline's dry run prints these for every training stage before anything is queued.
"""

from __future__ import annotations

from pathlib import Path

from factory.train.config import TrainConfig
from factory.train.blend import blend_phases

PLANNING_PEAK_FLOPS = 989e12
"""H100 SXM dense bf16 peak (../shared/notes/anchors.md), the GPU the GPU-hour estimate assumes."""
PLANNING_MFU = 0.40
"""Model FLOPs utilization the estimate assumes: Megatron-LM reaches up to 47% on H100, an 8-expert top-2
upcycle trained at 46.8% (anchors.md); 40% leaves room for a real cluster's stragglers and restarts."""


def lr_schedule(train: TrainConfig) -> str:
    o, s = train.optimizer, train.schedule
    peak = f"{o.lr:.3g}" if o.lr is not None else "the starting checkpoint's last LR (inherited)"
    low = f"{o.min_lr:.3g}" if o.min_lr is not None else "peak / 10"
    decay = s.decay_iters or train.train_iters
    shape = f"{s.style}, decay over {decay:,} iterations" if s.style != "constant" else "constant"
    if s.style == "wsd":
        shape += f" (the last {s.wsd_decay_iters:,} {s.wsd_decay_style})"
    return f"LR: peak {peak}, min {low}, warmup {s.warmup_iters:,} iterations, {shape}"


def synthetic_share(cfg, blend_file: Path, phase: str | None, pack_blend: Path) -> str:
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


def gpu_hours(tokens: float, flops_per_token: float, gpus: int) -> str:
    hours = tokens * flops_per_token / (PLANNING_PEAK_FLOPS * PLANNING_MFU) / 3600
    return (f"compute: {tokens * flops_per_token:.3g} model FLOPs = {hours:,.0f} H100 GPU-hours at "
            f"{PLANNING_MFU:.0%} MFU ({hours / gpus / 24:,.1f} days on {gpus} GPUs)")
