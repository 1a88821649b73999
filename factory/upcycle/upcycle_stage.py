"""The `upcycle` stage: dense checkpoint -> MoE checkpoint at iteration 0, verified on a probe batch.

Modes (see docs/stages/upcycle.md and factory/upcycle/routing.py for which routings are exact):
  copy      every expert is the dense FFN (Komatsuzaki et al.; Tanuki-8x8B).
  granular  the FFN split into G shards, each replicated E/G times; one router row per FFN copy, the
            experts' linear_fc2 scaled so the selected weights sum to the dense output (exact for SwiGLU).
  shared    the first S FFN neurons become the shared expert, the rest routed experts as above.
  drop      copy/granular, then a fraction of each expert's neurons re-initialized (Drop-Upcycling).
The MoE checkpoint is streamed: each tensor is made from the one dense tensor it comes from while it is
written, so memory stays near one layer's experts. Then the dense checkpoint and the MoE checkpoint
just written run layer by layer on the same probe batch; copy, granular and shared (without noise)
refuse to publish it when max |dlogits| exceeds upcycle.tolerance. Computation is fp32 in one CPU
process (the stage is bound by disk bandwidth).
"""

from __future__ import annotations

# torch and megatron are imported inside plan/run: the registry imports every stage module at start-up.
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from factory import outputs
from factory.config_base import CoreConfig
from factory.errors import ConfigError, VerificationError
from factory.io import atomic_dir
from factory.manifest import RunManifest
from factory.model.build import parameter_counts
from factory.runtime.config import ParallelConfig
from factory.stage_api import Plan, SectionSpec, Stage
from factory.train.checkpoint_meta import CheckpointMeta, UpcycleRecord
from factory.upcycle.config import UpcycleConfig
from factory.upcycle.target import check_fits, expert_plan, moe_model

if TYPE_CHECKING:  # for annotations only
    from factory.train.checkpoint_info import CheckpointInfo

log = logging.getLogger(__name__)


def source_path(cfg: CoreConfig) -> Path:
    """The dense checkpoint: the source root (its latest), or the iteration named by iteration or by tokens."""
    upcycle_config = STAGE.section_of(cfg)
    root = upcycle_config.source or outputs.pretrain(cfg).checkpoints
    if (upcycle_config.source_iteration is None and upcycle_config.source_tokens is None) or not root.is_dir():
        return root
    from factory.train import checkpoint as ckpt

    present = ckpt.saved_iterations(root)
    if not present:
        return root  # read_info names what is missing
    listed = ", ".join(map(str, present[-8:])) or "none"
    if upcycle_config.source_iteration is not None:
        if upcycle_config.source_iteration not in present:
            raise ConfigError(f"upcycle.source_iteration={upcycle_config.source_iteration}: not saved in {root} "
                              f"(latest saved: {listed})")
        return ckpt.iteration_dir(root, upcycle_config.source_iteration)
    seen = [(ckpt.read_info(ckpt.iteration_dir(root, it)).meta.lineage_tokens, it) for it in present]
    within = [(tokens, it) for tokens, it in seen if tokens <= upcycle_config.source_tokens]
    if not within:
        raise ConfigError(f"upcycle.source_tokens={upcycle_config.source_tokens:g}: no checkpoint in {root} has "
                          f"seen that few tokens (the first saved, iteration {seen[0][1]}, has seen {seen[0][0]:,})")
    return ckpt.iteration_dir(root, max(within)[1])


@dataclass(kw_only=True)
class UpcyclePlan(Plan):
    source: Path
    """The dense checkpoint iteration (or root) chosen by upcycle.source, source_iteration or source_tokens."""


def plan(cfg: CoreConfig) -> UpcyclePlan:
    from factory.train import checkpoint as ckpt

    upcycle_config, out = STAGE.section_of(cfg), outputs.upcycle(cfg).checkpoints
    info = ckpt.read_info(source_path(cfg))
    check_fits(info.model, cfg.model, info.path)
    target = moe_model(info.model, upcycle_config)
    existing = ckpt.latest_iteration(out) if out.is_dir() else None
    if existing not in (None, 0):
        raise ConfigError(f"upcycle.output_dir={out}: holds a checkpoint at iteration {existing}, "
                          "not an upcycle output; choose another folder")
    return UpcyclePlan(output_dir=out, reads=[info.path], writes=[ckpt.iteration_dir(out, 0)], source=info.path, notes=[
        f"source: iteration {info.iteration} ({info.meta.lineage_tokens:,} tokens seen) of {info.path.parent}",
        f"mode {upcycle_config.mode}, granularity {upcycle_config.granularity}, "
        f"expert scale {expert_plan(info.model, upcycle_config).alpha:g}, "
        f"{'exact: refuses above' if upcycle_config.exact else 'reported, not refused:'} "
        f"tolerance {upcycle_config.tolerance:g}",
        f"dense parameters: {parameter_counts(info.model).describe()}",
        f"MoE parameters:   {parameter_counts(target).describe()}"])


def run(cfg: CoreConfig, plan: UpcyclePlan, manifest: RunManifest) -> None:
    from factory.runtime.runtime import runtime_session
    from factory.train import checkpoint as ckpt
    from factory.train.checkpoint_stream import CheckpointReader, save_streaming
    from factory.upcycle.weights import MoeProducer, compare, probe_tokens

    upcycle_config = STAGE.section_of(cfg)
    info = ckpt.read_info(plan.source)
    target, xplan = moe_model(info.model, upcycle_config), expert_plan(info.model, upcycle_config)
    manifest.add_input(info.path, role="dense_checkpoint")
    t0 = time.perf_counter()
    runtime_cfg = cfg.runtime.model_copy(update={"precision": "fp32", "device": "cpu", "seed": upcycle_config.seed})
    with runtime_session(runtime_cfg, ParallelConfig()) as runtime, atomic_dir(plan.output_dir) as tmp:
        dense = CheckpointReader(info.path, runtime)
        producer = MoeProducer(dense, xplan, upcycle_config.seed)
        _, written = save_streaming(tmp, target, runtime, producer, meta=lineage_meta(info, upcycle_config))
        seq = upcycle_config.probe_seq_length or min(info.model.seq_length, 128)
        tokens = probe_tokens(info.model.vocab_size, upcycle_config.probe_batch_size, seq, upcycle_config.seed)
        metrics = compare(dense, CheckpointReader(tmp, runtime), tokens, runtime)
        metrics.update(expert_scale=xplan.alpha, exact=int(upcycle_config.exact), bytes_written=written,
                       bytes_read=dense.bytes_read)
        manifest.record(**metrics)
        log.info("upcycle: max |dlogits| %.3g over %d probe tokens (%s)", metrics["max_abs_logit_diff"],
                 tokens.numel(), "exact mode" if upcycle_config.exact else "divergence reported")
        if upcycle_config.exact and not metrics["max_abs_logit_diff"] <= upcycle_config.tolerance:
            raise VerificationError(
                f"upcycle: max |dlogits| {metrics['max_abs_logit_diff']:.3g} exceeds upcycle.tolerance "
                f"{upcycle_config.tolerance:g} for exact mode {upcycle_config.mode}; nothing was written")
    manifest.record(seconds=round(time.perf_counter() - t0, 3))
    manifest.add_output(plan.output_dir, role="moe_checkpoint")


def lineage_meta(info: CheckpointInfo, upcycle_config: UpcycleConfig) -> CheckpointMeta:
    """The MoE checkpoint's metadata (from the dense checkpoint's): a run of no tokens that inherits the dense
    lineage's tokens and its final LR."""
    upcycle = UpcycleRecord(mode=upcycle_config.mode, granularity=upcycle_config.granularity,
                            router_init=upcycle_config.router_init,
                            drop_fraction=upcycle_config.drop_fraction if upcycle_config.mode == "drop" else 0.0,
                            noise_std=upcycle_config.noise_std,
                            source=str(info.path), source_iteration=info.iteration)
    source = info.meta
    return CheckpointMeta(stage="upcycle", lineage_tokens=source.lineage_tokens, run_tokens=0,
                          final_lr=source.final_lr or None, upcycle=upcycle,
                          lineage=source.lineage_from_here(str(info.path), info.iteration))


STAGE: Stage[UpcycleConfig, UpcyclePlan] = Stage(
    name="upcycle", help="turn a dense checkpoint into a verified-equal MoE checkpoint",
    sections=(SectionSpec("upcycle", UpcycleConfig,
                          "Dense checkpoint -> MoE checkpoint equal to it at step 0 (copy, granular, shared, drop)."),),
    plan=plan, run=run, outputs=outputs.upcycle, result_sections=("runtime", "model", "upcycle"), after=("pretrain",))
