"""Megatron-LM checkpoint layout on megatron.core dist_checkpointing (torch_dist).

```
<root>/latest_checkpointed_iteration.txt     "100" (moves last, atomically)
<root>/iter_0000100/                          dist_checkpointing folder: metadata.json (format),
                                              .metadata + __<rank>_<n>.distcp (torch DCP)
```
The sharded part holds `model` (GPTModel.sharded_state_dict(), so any TP/PP/EP can load it),
optionally `optimizer` and a per-rank `rng_state`. The common part holds Megatron-LM's `args`,
`iteration` and `checkpoint_version`, the LR scheduler state, and a `factory` dict: the model config,
data position and lineage, which our own stages read back (`read_info`) without building a model.

An iteration folder is written under a temporary name and renamed when complete; the tracker file
is rewritten after that, so a crash at any point leaves the previous checkpoint current.

Saves are synchronous and start no helper process (`_write_results_in_this_process`), so a stop signal
sent to the whole process group (torchrun's `os.killpg`, Slurm's signal to every process of a step)
cannot break the save it asks for.
"""

from __future__ import annotations

import argparse
import logging
import queue
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factory.errors import CheckpointError
from factory.io import atomic_write_text
from factory.model.config import ModelConfig
from factory.train import integrity

log = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
CHECKPOINT_VERSION = 3.0
_ITER_RE = re.compile(r"^iter_(\d{7})$")


def iteration_dir(root: Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def saved_iterations(root: Path) -> list[int]:
    """The iteration folders under `root`, in order (complete ones: temporary names do not match)."""
    return sorted(int(m.group(1)) for p in Path(root).iterdir() if p.is_dir() and (m := _ITER_RE.match(p.name)))


def latest_iteration(root: Path) -> int | None:
    """The iteration the tracker names, or None when `root` holds no checkpoint yet."""
    tracker = Path(root) / TRACKER
    if not tracker.exists():
        return None
    text = tracker.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker}: expected an iteration number, found {text[:40]!r}")
    iteration = int(text)
    if not iteration_dir(root, iteration).is_dir():
        raise CheckpointError(f"{tracker}: names iteration {iteration} but {iteration_dir(root, iteration)} is missing")
    return iteration


def newest_intact(root: Path) -> Path:
    """The newest iteration folder of `root` whose files match their integrity record, starting from the one
    the tracker names; each damaged one is skipped with a warning naming the file."""
    root = Path(root)
    try:
        latest = latest_iteration(root)
    except CheckpointError as e:
        log.warning("checkpoint: %s; looking for an earlier intact iteration", e)
        latest = None
    found = sorted((int(m.group(1)) for p in root.iterdir() if (m := _ITER_RE.match(p.name))), reverse=True)
    for it in [i for i in found if latest is None or i <= latest]:
        folder = iteration_dir(root, it)
        damage = integrity.problems(folder)
        if not damage:
            try:
                read_info(folder)
            except CheckpointError as e:
                damage = [str(e)]
        if not damage:
            return folder
        log.warning("checkpoint: %s is damaged (%s); falling back to the previous iteration", folder, damage[0])
    raise CheckpointError(f"{root}: no intact checkpoint (every iteration folder is damaged or unreadable)")


def resolve(path: Path) -> Path:
    """An `iter_*` folder from either itself or a checkpoint root with a tracker file."""
    path = Path(path)
    if _ITER_RE.match(path.name) and (path / "metadata.json").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    iteration = latest_iteration(path)
    if iteration is None:
        raise CheckpointError(f"{path}: not a checkpoint (no {TRACKER} and not an iter_NNNNNNN folder)")
    return iteration_dir(path, iteration)


@dataclass
class CheckpointInfo:
    """What a checkpoint is, read from its common state without loading tensors."""

    path: Path
    iteration: int
    model: ModelConfig
    factory: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] | None = None

    @property
    def consumed_samples(self) -> int:
        return int(self.factory.get("consumed_samples", 0))

    @property
    def has_optimizer(self) -> bool:
        return bool(self.factory.get("has_optimizer"))


def read_info(path: Path) -> CheckpointInfo:
    """Read a checkpoint's common state (model config, iteration, lineage)."""
    from megatron.core import dist_checkpointing

    ckpt = resolve(path)
    damage = integrity.problems(ckpt, checksums=False)  # sizes only: cheap enough for every plan
    if damage:
        raise CheckpointError("\n".join([f"checkpoint {ckpt} is damaged: {damage[0]}"] + damage[1:]))
    try:
        common = dist_checkpointing.load_common_state_dict(str(ckpt))
    except Exception as e:  # noqa: BLE001 - any read failure is reported as one line
        raise CheckpointError(f"{ckpt}: cannot read common state ({type(e).__name__}: {e})") from e
    meta = common.get("factory")
    if not isinstance(meta, dict) or "model" not in meta:
        raise CheckpointError(f"{ckpt}: no factory metadata (model config) in common.pt; "
                              "was it written by this project?")
    return CheckpointInfo(path=ckpt, iteration=int(common.get("iteration", 0)),
                          model=ModelConfig.model_validate(meta["model"]), factory=meta,
                          scheduler=common.get("opt_param_scheduler"))


def megatron_args(model: ModelConfig, rt, iteration: int) -> argparse.Namespace:
    """The subset of Megatron-LM's `args` its loaders and converters read from a checkpoint."""
    p = rt.parallel
    args = argparse.Namespace(
        num_layers=model.num_layers, hidden_size=model.hidden_size, ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads, group_query_attention=model.query_groups < model.num_attention_heads,
        num_query_groups=model.query_groups, kv_channels=model.head_dim, seq_length=model.seq_length,
        max_position_embeddings=model.max_position_embeddings or model.seq_length,
        padded_vocab_size=model.padded_vocab_size(p.tensor), make_vocab_size_divisible_by=model.make_vocab_size_divisible_by,
        normalization="RMSNorm", norm_epsilon=model.norm_epsilon, swiglu=True, add_bias_linear=False,
        position_embedding_type="rope", rotary_base=model.rotary_base,
        untie_embeddings_and_output_weights=model.untie_embeddings_and_output_weights,
        tensor_model_parallel_size=p.tensor, pipeline_model_parallel_size=p.pipeline,
        expert_model_parallel_size=p.expert, context_parallel_size=p.context,
        ckpt_format="torch_dist", iteration=iteration,
        num_experts=model.moe.num_experts if model.moe else None,
        moe_router_topk=model.moe.router_topk if model.moe else None,
        moe_ffn_hidden_size=(model.moe.ffn_hidden_size or model.ffn_hidden_size) if model.moe else None,
    )
    return args


def _rng_object(rt) -> Any:
    from megatron.core import tensor_parallel
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    state = {**rt.device_rng_state(), "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    return ShardedObject("rng_state", state, (rt.world_size,), (rt.rank,), replica_id=0)


def _restore_rng(state: dict, rt) -> None:
    from megatron.core import tensor_parallel

    rt.set_device_rng_state(state)
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _optimizer_sharded(optimizer, model_sd: dict, is_loading: bool) -> dict:
    return optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                        metadata={"distrib_optim_sharding_type": "fully_sharded_model_space"})


def save(root: Path, iteration: int, model, model_cfg: ModelConfig, rt, *, optimizer=None,
         scheduler=None, meta: dict[str, Any] | None = None, keep_last: int | None = None,
         keep_every: int | None = None) -> Path:
    """Write `root/iter_<iteration>` on all ranks, then move the tracker; returns the folder."""
    from megatron.core import dist_checkpointing

    root = Path(root)
    final = iteration_dir(root, iteration)
    tmp = root / f".{final.name}.partial"
    if rt.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    model_sd = model.sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd, "rng_state": _rng_object(rt)}
    if optimizer is not None:
        state["optimizer"] = _optimizer_sharded(optimizer, model_sd, is_loading=False)
    state["args"] = megatron_args(model_cfg, rt, iteration)
    state["iteration"] = iteration
    state["checkpoint_version"] = CHECKPOINT_VERSION
    if scheduler is not None:
        state["opt_param_scheduler"] = scheduler.state_dict()
    state["factory"] = {**(meta or {}), "model": model_cfg.model_dump(mode="json"),
                        "has_optimizer": optimizer is not None, "world_size": rt.world_size}
    _write_results_in_this_process()
    with rt.compute_context():
        dist_checkpointing.save(state, str(tmp))
    _barrier()
    integrity.record(tmp)
    _barrier()
    if rt.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        atomic_write_text(root / TRACKER, f"{iteration}\n")
        _prune(root, iteration, keep_last, keep_every)
    _barrier()
    log.info("checkpoint: saved iteration %d to %s", iteration, final)
    return final


def _write_results_in_this_process() -> None:
    """Give Megatron's torch_dist writer an in-process queue for its write results.

    By default the writer gets that queue from a multiprocessing manager, a helper process it spawns at
    the first save and keeps. The helper sits in the training process's group, so SIGUSR1/SIGTERM sent
    to the group kill it, and the save the signal asks for dies with BrokenPipeError. A synchronous save
    runs the writer (and its threads) in this process, where a plain queue serves it; the factory never
    uses Megatron's asynchronous save, the one case that needs a queue shared across processes. A fresh
    queue per save also means a save that failed half-way leaves no stale result for the next one.
    """
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    filesystem_async._results_queue = queue.Queue()


def load(path: Path, model, rt, *, optimizer=None, restore_rng: bool = True, verify: bool = True) -> CheckpointInfo:
    """Load model (and optimizer, RNG) from a checkpoint saved with any parallel layout; its files are checked
    against the save's integrity record first (`verify=False` when the caller just did)."""
    from megatron.core import dist_checkpointing

    from factory.train.checkpoint_keys import fit_to_checkpoint

    info = read_info(path)
    if verify:
        integrity.verify(info.path)
    if optimizer is not None and not info.has_optimizer:
        raise CheckpointError(f"{info.path}: has no optimizer state to resume from")
    model_sd = model.sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        state["optimizer"] = _optimizer_sharded(optimizer, model_sd, is_loading=True)
    same_world = info.factory.get("world_size") == rt.world_size
    if restore_rng and same_world:
        state["rng_state"] = _rng_object(rt)
    elif restore_rng:
        log.warning("checkpoint: %s was saved by %s ranks and loads on %d: per-rank RNG state not restored "
                    "(dropout and other random draws differ from an uninterrupted run)",
                    info.path, info.factory.get("world_size"), rt.world_size)
    fit_to_checkpoint(state, info.path)  # older MoE keys, TE extra state a CPU-written checkpoint lacks
    try:
        with rt.compute_context():
            loaded = dist_checkpointing.load(state, str(info.path))
    except Exception as e:  # noqa: BLE001 - shape/key mismatches surface as many exception types
        raise CheckpointError(f"{info.path}: does not fit this model ({type(e).__name__}: {_first_line(e)})") from e
    model.load_state_dict(loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if "rng_state" in loaded:
        _restore_rng(loaded["rng_state"], rt)
    return info


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _prune(root: Path, current: int, keep_last: int | None, keep_every: int | None) -> None:
    """Delete iteration folders beyond the last `keep_last`, keeping multiples of `keep_every`."""
    if keep_last is None:
        return
    iterations = sorted(int(m.group(1)) for p in root.iterdir() if (m := _ITER_RE.match(p.name)))
    recent = set(iterations[-keep_last:]) | {current}
    for it in iterations:
        if it in recent or (keep_every and it % keep_every == 0):
            continue
        shutil.rmtree(iteration_dir(root, it), ignore_errors=True)
        log.info("checkpoint: removed iteration %d (keep_last=%s, keep_every=%s)", it, keep_last, keep_every)


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
