"""Megatron-LM checkpoint layout on megatron.core dist_checkpointing (torch_dist).

```
<root>/latest_checkpointed_iteration.txt     "100" (moves last, atomically)
<root>/iter_0000100/                          dist_checkpointing folder: metadata.json (format),
                                              .metadata + __<rank>_<n>.distcp (torch DCP)
```
The sharded part holds `model` (GPTModel.sharded_state_dict(), so any TP/PP/EP can load it),
optionally `optimizer` (keyed like the model, so any layout can load it too: `checkpoint_optimizer`) and a
per-rank `rng_state`. The common part holds Megatron-LM's `args`, `iteration` and `checkpoint_version`, the
LR scheduler state, the optimizer format (`content_metadata`), and a `factory` dict: the model config, data
position and lineage (`checkpoint_meta.CheckpointMeta`), which our own stages read back (`read_info`) without
building a model.

An iteration folder is written under a temporary name and renamed when complete; the tracker file
is rewritten after that, so a crash at any point leaves the previous checkpoint current. The folder steps
(publish, replace, prune) and the recovery after a crash are in `checkpoint_root`.

Saves are written by every rank (each data-parallel replica writes a share), in the caller's thread or in a
background thread of this process, and committed once every rank has written (`checkpoint_save`); no helper
process is started, so a stop signal sent to the whole process group (torchrun's `os.killpg`, Slurm's signal to
every process of a step) cannot break the save it asks for. Loads check what they read against the save's
integrity record as they read it (`integrity_reader`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.checkpoint.api import CheckpointException

from factory.errors import CheckpointError
from factory.model.config import ModelConfig
from factory.runtime.config import ParallelConfig
from factory.train import checkpoint_optimizer, checkpoint_root, checkpoint_save, integrity, integrity_reader
from factory.train.checkpoint_info import CheckpointInfo
from factory.train.checkpoint_keys import fit_to_checkpoint
from factory.train.checkpoint_meta import CheckpointMeta, factory_state
from factory.train.checkpoint_root import TRACKER  # noqa: F401 - part of this module's interface
from factory.train.checkpoint_root import (is_iteration_dir, iteration_dir, latest_iteration,
                                           saved_iterations)

if TYPE_CHECKING:  # for annotations only
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import MegatronOptimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from factory.runtime.runtime import Runtime

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3.0


def newest_intact(root: Path, checksums: bool = True, below: int | None = None) -> Path:
    """The newest iteration folder of `root`, from the committed one (or the one below `below`) down, whose every
    file matches its integrity record and whose common state reads; each damaged one is skipped with a warning
    naming the file. `checksums`: read each folder it checks whole (collective under torch.distributed);
    without, sizes only (a load then checks what it reads: `load`, DamagedCheckpoint)."""
    root = Path(root)
    latest = latest_iteration(root)
    top = latest if below is None or latest is None else min(latest, below - 1)
    candidates = [it for it in saved_iterations(root) if top is not None and it <= top]
    newest_damage = ""
    for it in reversed(candidates):
        folder = iteration_dir(root, it)
        damage = _damage(folder, checksums)
        if damage is None:
            return folder
        newest_damage = newest_damage or damage
        log.warning("checkpoint: %s is damaged (%s); falling back to the previous iteration", folder, damage)
    why = f"the newest: {newest_damage}" if newest_damage else "no iteration folder"
    raise CheckpointError(f"{root}: no intact checkpoint ({why})")


def _damage(folder: Path, checksums: bool) -> str | None:
    """The first thing wrong with an iteration folder, or None when it verifies."""
    found = integrity.problems(folder, checksums=checksums)
    if found:
        return found[0]
    try:
        read_info(folder)
    except CheckpointError as e:
        return _first_line(e)
    return None


def recover(root: Path, runtime: Runtime) -> None:
    """Tidy what an interrupted save left under `root` (rank 0 does it, every rank waits) before a run reads it."""
    if runtime.is_main:
        checkpoint_root.recover(root)
    _barrier()


def resolve(path: Path) -> Path:
    """An `iter_*` folder from either itself or a checkpoint root with a tracker file."""
    path = Path(path)
    if is_iteration_dir(path) and (path / "metadata.json").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    iteration = latest_iteration(path)
    if iteration is None:
        raise CheckpointError(f"{path}: not a checkpoint (no iter_NNNNNNN folder in it, and not one itself)")
    return iteration_dir(path, iteration)


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
        raise CheckpointError(f"{ckpt}: cannot read common state ({type(e).__name__}: {_first_line(e)})") from e
    raw = common.get("factory")
    if not isinstance(raw, dict) or "model" not in raw:
        raise CheckpointError(f"{ckpt}: no factory metadata (model config) in common.pt; "
                              "was it written by this project?")
    try:
        meta = CheckpointMeta.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt}: unreadable factory metadata in common.pt ({type(e).__name__}: "
                              f"{_first_line(e)})") from e
    if integrity.optimizer_removed(ckpt):  # kept for keep_every, its optimizer state dropped (checkpoint_strip)
        meta = dataclasses.replace(meta, has_optimizer=False)
    args = common.get("args")
    parallel = ParallelConfig(
        tensor=getattr(args, "tensor_model_parallel_size", 1), pipeline=getattr(args, "pipeline_model_parallel_size", 1),
        expert=getattr(args, "expert_model_parallel_size", 1), expert_tensor=getattr(args, "expert_tensor_parallel_size", None))
    return CheckpointInfo(path=ckpt, iteration=int(common.get("iteration", 0)),
                          model=ModelConfig.model_validate(raw["model"]), meta=meta,
                          scheduler=common.get("opt_param_scheduler"), parallel=parallel,
                          content_metadata=common.get("content_metadata"))


def megatron_args(model: ModelConfig, runtime: Runtime, iteration: int) -> argparse.Namespace:
    """The subset of Megatron-LM's `args` its loaders and converters read from a checkpoint."""
    p = runtime.parallel
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
        expert_model_parallel_size=p.expert, expert_tensor_parallel_size=p.expert_tensor_size,
        context_parallel_size=p.context,
        ckpt_format="torch_dist", iteration=iteration,
        num_experts=model.moe.num_experts if model.moe else None,
        moe_router_topk=model.moe.router_topk if model.moe else None,
        moe_ffn_hidden_size=(model.moe.ffn_hidden_size or model.ffn_hidden_size) if model.moe else None,
    )
    return args


def _rng_object(runtime: Runtime) -> Any:
    from megatron.core import tensor_parallel
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    state = {**runtime.device_rng_state(), "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    return ShardedObject("rng_state", state, (runtime.world_size,), (runtime.rank,), replica_id=0)


def _restore_rng(state: dict, runtime: Runtime) -> None:
    from megatron.core import tensor_parallel

    runtime.set_device_rng_state(state)
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def save(root: Path, iteration: int, model: GPTModel, model_cfg: ModelConfig, runtime: Runtime, *,
         optimizer: MegatronOptimizer | None = None, scheduler: OptimizerParamScheduler | None = None,
         meta: CheckpointMeta | None = None, keep_last: int | None = None, keep_every: int | None = None,
         keep_every_optimizer: bool = True) -> Path:
    """Write `root/iter_<iteration>` on all ranks, publish it (the tracker moves last) and apply retention;
    returns the folder. A write the file system refuses (disk full, file size limit) is one OutputError naming
    the folder being written; that folder is removed and the previous checkpoint stays current."""
    pending = begin_save(root, iteration, model, model_cfg, runtime, optimizer=optimizer, scheduler=scheduler,
                         meta=meta)
    return pending.commit(keep_last, keep_every, keep_every_optimizer)


def begin_save(root: Path, iteration: int, model: GPTModel, model_cfg: ModelConfig, runtime: Runtime, *,
               optimizer: MegatronOptimizer | None = None, scheduler: OptimizerParamScheduler | None = None,
               meta: CheckpointMeta | None = None, background: bool = False) -> checkpoint_save.PendingSave:
    """Write this rank's files of `root/iter_<iteration>` (in a background thread when `background`); the
    returned save is committed with `commit` once every rank has written (checkpoint_save)."""
    model_sd = model.sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd, "rng_state": _rng_object(runtime)}
    if optimizer is not None:
        state["optimizer"] = checkpoint_optimizer.to_save(optimizer, model_sd)
    state["args"] = megatron_args(model_cfg, runtime, iteration)
    state["iteration"] = iteration
    state["checkpoint_version"] = CHECKPOINT_VERSION
    if scheduler is not None:
        state["opt_param_scheduler"] = scheduler.state_dict()
    state["factory"] = factory_state(meta, model_cfg, has_optimizer=optimizer is not None,
                                     world_size=runtime.world_size)
    return checkpoint_save.start(Path(root), iteration, state, runtime, background)


class DamagedCheckpoint(CheckpointError):
    """A load found stored bytes that differ from the save's integrity record."""


def load(path: Path, model: GPTModel, runtime: Runtime, *, optimizer: MegatronOptimizer | None = None,
         restore_rng: bool = True) -> CheckpointInfo:
    """Load model (and optimizer, RNG) from a checkpoint saved with any parallel layout; every item read is
    checked against the save's integrity record as it is read (DamagedCheckpoint naming the file, on every
    rank). Each data-parallel replica reads a share and receives the rest from the others (Megatron's fully
    parallel load), so the job reads the checkpoint once rather than once per replica."""
    from megatron.core import dist_checkpointing


    info = read_info(path)
    integrity.verify(info.path, whole_files_only=True)  # the small files; tensor files are checked as read
    if optimizer is not None and not info.meta.has_optimizer:
        raise CheckpointError(f"{info.path}: has no optimizer state to resume from")
    model_sd = model.sharded_state_dict()
    state: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        if refusal := checkpoint_optimizer.layout_refusal(info, runtime.parallel):
            raise CheckpointError(refusal)
        metadata = info.content_metadata or checkpoint_optimizer.LEGACY_METADATA
        state[checkpoint_optimizer.TENSORS], optimizer_rest = checkpoint_optimizer.load_request(
            optimizer, model_sd, metadata)
    same_world = info.meta.world_size == runtime.world_size
    if restore_rng and same_world:
        state["rng_state"] = _rng_object(runtime)
    elif restore_rng:
        log.warning("checkpoint: %s was saved by %s ranks and loads on %d: per-rank RNG state not restored "
                    "(dropout and other random draws differ from an uninterrupted run)",
                    info.path, info.meta.world_size, runtime.world_size)
    fit_to_checkpoint(state, info.path)  # older MoE keys, TE extra state a CPU-written checkpoint lacks
    reads = integrity_reader.start_load()
    try:
        with runtime.compute_context():
            loaded = dist_checkpointing.load(state, str(info.path), sharded_strategy=_load_strategy())
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - shape/key mismatches surface as many types;
        # torch DCP reports a key the checkpoint lacks as CheckpointException, a BaseException
        raise CheckpointError(f"{info.path}: does not fit this model ({_describe(e)})") from e
    damage = _everyone(reads.damage)
    if damage:
        raise DamagedCheckpoint("\n".join([f"checkpoint {info.path} is damaged: {damage[0]}"] + damage[1:]))
    log.info("checkpoint: loaded %s (%.1f MB read by this rank)", info.path, reads.bytes_read / 1e6)
    try:
        with runtime.compute_context():
            model.load_state_dict(loaded["model"])
            if optimizer is not None:
                checkpoint_optimizer.restore(optimizer, loaded[checkpoint_optimizer.TENSORS], optimizer_rest,
                                             loaded.get("optimizer"))
    except (Exception, CheckpointException) as e:  # noqa: BLE001
        raise CheckpointError(f"{info.path}: does not fit this model ({_describe(e)})") from e
    if "rng_state" in loaded:
        _restore_rng(loaded["rng_state"], runtime)
    return info


def _load_strategy():
    """Megatron's fully parallel load over the data-parallel group (each replica reads a share)."""
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelLoadStrategyWrapper
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistLoadShardedStrategy

    return FullyParallelLoadStrategyWrapper(TorchDistLoadShardedStrategy(),
                                            parallel_state.get_data_parallel_group(with_context_parallel=True))


def _everyone(lines: list[str]) -> list[str]:
    """Every rank's `lines`, on every rank."""
    if not torch.distributed.is_initialized():
        return lines
    parts: list[list[str]] = [[] for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(parts, lines)
    return [line for part in parts for line in part]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _describe(e: BaseException) -> str:
    """`Type: first line` of an error; torch DCP's CheckpointException by the first rank's error it wraps."""
    failures = getattr(e, "failures", None)
    if isinstance(e, CheckpointException) and failures:
        e = next(iter(failures.values()))[0]
    return f"{type(e).__name__}: {_first_line(e)}"


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
