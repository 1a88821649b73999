"""Writing one checkpoint iteration: every rank writes its share, now or in a background thread, then the commit.

`start` plans the save with Megatron's fully parallel strategy (FullyParallelSaveStrategyWrapper over the
torch_dist writer): each tensor that data-parallel replicas hold alike is written by one of them, spread evenly,
instead of all by DP rank 0. The optimizer state goes to files of its own (`optimizer.__<rank>_<n>.distcp`,
the writer's separation hint), so retention can later drop it from a kept checkpoint without rewriting the
model's files. The files are then written in the caller's thread, or, for a background save, from a snapshot of
the tensors this rank writes (host copies taken before `start` returns, so the training that goes on cannot
change what is written) in one thread of this process: a stop signal sent to the process group reaches only
the main thread, and there is no helper process for it to kill (checkpoint_writer).

`PendingSave.commit` is collective and runs in the main thread once every rank has written its files: Megatron's
finalization (the coordinator writes `.metadata` from every rank's write results, then `metadata.json`), the
integrity record from the digests the writers took, and the folder steps of `checkpoint_root` (publish, then
prune; the tracker moves last). Until then the save is a `.partial` folder, which a crash leaves to
`checkpoint_root.recover`.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from factory.errors import OutputError
from factory.io import os_error_line
from factory.runtime.memory import host_buffer
from factory.train import checkpoint_optimizer, checkpoint_root, checkpoint_writer, integrity
from factory.train.checkpoint_strip import OPTIMIZER_FILES, strip_optimizer

if TYPE_CHECKING:  # for annotations only
    from factory.runtime.runtime import Runtime

log = logging.getLogger("factory.train.checkpoint")


def start(root: Path, iteration: int, state: dict[str, Any], runtime: Runtime, background: bool) -> PendingSave:
    """Plan the save of `state` into `root/.iter_N.partial` (collective) and write this rank's files, now or
    in a background thread; returns the save to commit."""
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    partial = checkpoint_root.partial_dir(root, iteration)
    if runtime.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)  # an earlier attempt's: never current
        partial.mkdir()
    _barrier()
    strategy = FullyParallelSaveStrategyWrapper(
        TorchDistSaveShardedStrategy(thread_count=2, separation_hint=OPTIMIZER_FILES),
        parallel_state.get_data_parallel_group(with_context_parallel=True))
    write_log = checkpoint_writer.prepare()
    with runtime.compute_context():
        request = dist_checkpointing.save(state, str(partial), sharded_strategy=strategy, async_sharded_save=True,
                                          content_metadata=checkpoint_optimizer.METADATA, async_strategy="mcore")
    pending = PendingSave(root, iteration, partial, request, write_log, runtime)
    if request.async_fn is None:  # nothing for this rank to write
        return pending
    transform_list, _ = request.async_fn.args  # Megatron's partial(write_preloaded_data_multithread, ...)
    _, buckets, results = request.async_fn_args
    if not background:
        checkpoint_writer.write_all(transform_list, request.preload_fn(), results)  # preload: device -> host
        return pending
    pending.thread = threading.Thread(target=checkpoint_writer.write_all,
                                      args=(transform_list, _snapshot(buckets, state, runtime), results),
                                      name=f"checkpoint-{iteration}", daemon=True)
    pending.thread.start()
    return pending


def _snapshot(buckets: list, state: dict[str, Any], runtime: Runtime) -> list:
    """This rank's write buckets with every tensor the training can still change (on the device, or on the host
    in the training's own storage) copied to the host, so the steps that run during a background write cannot
    change what it writes. Views (SwiGLU's gate and up halves of fc1, a flattened optimizer shard) the writer's
    planning has already cloned on the host are the save's own and are not copied again."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    training = {sh.data.untyped_storage().data_ptr() for sh in nested_values(state)  # factories applied by save
                if isinstance(sh, ShardedTensor) and isinstance(sh.data, torch.Tensor)}
    changing = [t for _, _, (_, tensors) in buckets for _, t in tensors
                if t.device.type != "cpu" or t.untyped_storage().data_ptr() in training]
    buffers = _host_buffers(changing, runtime)
    copies = {id(t): held.copy_(t.detach(), non_blocking=True) for t, held in zip(changing, buffers)}
    runtime.synchronize()
    return [(path, key, (objects, [(item, copies.get(id(t), t)) for item, t in tensors]))
            for path, key, (objects, tensors) in buckets]


_held: list[torch.Tensor] = []


def _host_buffers(tensors: list[torch.Tensor], runtime: Runtime) -> list[torch.Tensor]:
    """Host tensors shaped like `tensors` (pinned on GPUs), kept from save to save: one save is in flight at a
    time, and copying into memory already mapped runs at memcpy speed, where fresh memory faults every page in."""
    _held[:] = [_held[i] if i < len(_held) and _held[i].shape == t.shape and _held[i].dtype == t.dtype
                else host_buffer(t.shape, t.dtype, runtime.device) for i, t in enumerate(tensors)]
    return list(_held)


class PendingSave:
    """A save whose files are being (or have been) written, not yet committed."""

    def __init__(self, root: Path, iteration: int, partial: Path, request, write_log, runtime: Runtime):
        self.root, self.iteration, self.partial, self.request, self.write_log, self.runtime = (
            root, iteration, partial, request, write_log, runtime)
        self.thread: threading.Thread | None = None

    def written_everywhere(self) -> bool:
        """Whether every rank has written its files (collective; does not wait)."""
        busy = torch.tensor([int(self.thread is not None and self.thread.is_alive())], device=self.runtime.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(busy)
        return int(busy.item()) == 0

    def commit(self, keep_last: int | None, keep_every: int | None, keep_every_optimizer: bool = True) -> Path:
        """Wait for this rank's writes, finalize on every rank, record integrity, publish and prune (the
        iterations kept for `keep_every` lose their optimizer state unless `keep_every_optimizer`); returns the
        iteration folder. A write the file system refused is one OutputError naming the folder (removed)."""
        if self.thread is not None:
            self.thread.join()
        try:
            with self.runtime.compute_context():
                for finalize in self.request.finalize_fns:  # .metadata from every rank's results, metadata.json
                    finalize()
        except BaseException as e:  # torch DCP's CheckpointException is a BaseException
            cause = self.write_log.os_errors[0] if self.write_log.os_errors else checkpoint_writer.os_error_in(e)
            if cause is None:
                raise
            if self.runtime.is_main:
                shutil.rmtree(self.partial, ignore_errors=True)
            raise OutputError(f"checkpoint iteration {self.iteration}: {os_error_line(cause, self.partial)}; "
                              "removed it, the previous checkpoint stays current") from None
        integrity.record(self.partial, self.write_log.files)
        _barrier()
        if self.runtime.is_main:
            checkpoint_root.publish(self.root, self.iteration)
            for kept in checkpoint_root.prune(self.root, self.iteration, keep_last, keep_every):
                if not keep_every_optimizer:
                    strip_optimizer(self.root, kept)
        _barrier()
        final = checkpoint_root.iteration_dir(self.root, self.iteration)
        log.info("checkpoint: saved iteration %d to %s", self.iteration, final)
        return final


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
