"""Megatron checkpoints read and written one parameter at a time, for models too big to hold in memory.

Both directions take the checkpoint's structure from a GPTModel built on torch's meta device (shapes
only, no memory): its `sharded_state_dict()` names every chunk exactly as `checkpoint.save` would, so
the files are the same torch_dist format and load with any TP/PP/EP. A `Layout` records, for each
parameter (a TP=1 state-dict name), the chunks it is stored as: sharded key, global offset and the
chunk's view geometry inside the parameter.

- `CheckpointReader.read(names)` fills just those parameters with torch DCP, reading only the stored
  chunks that overlap them, whatever TP/PP/EP layout the checkpoint was saved with.
- `save_streaming(root, model_cfg, runtime, produce)` writes an iteration folder whose tensors come from
  `produce(name)` while torch DCP writes them, one parameter held at a time.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem, WriteItem, WriteItemType
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from factory.errors import CheckpointError, FactoryError, OutputError
from factory.io import os_error_line
from factory.model.build import build_gpt_model
from factory.model.config import ModelConfig
from factory.progress import ByteProgress
from factory.train import checkpoint as ckpt
from factory.train import checkpoint_root, integrity
from factory.train.checkpoint_keys import older_keys
from factory.train.checkpoint_meta import CheckpointMeta, factory_state
from factory.train.checkpoint_writer import os_error_in

if TYPE_CHECKING:  # for annotations only
    from factory.runtime.runtime import Runtime

log = logging.getLogger(__name__)

Produce = Callable[[str], torch.Tensor]
"""name (a GPTModel state-dict key at TP=1) -> that parameter's full tensor."""

_VOCAB_ROWS = ("embedding.word_embeddings.weight", "output_layer.weight")  # padded per saved TP size


@dataclass(frozen=True)
class Chunk:
    """One stored chunk of a parameter: where it sits in the checkpoint and in the parameter."""

    key: str
    offset: tuple[int, ...]
    """Global offset in the checkpoint tensor, prepended (layer, expert) axes included."""
    global_shape: tuple[int, ...]
    size: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int

    def view(self, param: torch.Tensor) -> torch.Tensor:
        return torch.as_strided(param, self.size, self.stride, self.storage_offset)


class Layout:
    """Parameter name -> (shape, dtype) and its stored chunks, for one model config at TP=1."""

    def __init__(self, model_cfg: ModelConfig, runtime: Runtime):
        from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories


        model = build_gpt_model(runtime.runnable(model_cfg), runtime, pre_process=True, post_process=True, meta=True)
        tensors = {id(t): (name, t) for name, t in model.state_dict(keep_vars=True).items()
                   if isinstance(t, torch.Tensor)}
        self.sharded = model.sharded_state_dict()
        apply_factories(self.sharded)
        self.params: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self.chunks: dict[str, list[Chunk]] = {}
        for sh in _leaves(self.sharded):
            if not isinstance(sh, ShardedTensor):
                continue
            base = sh.data._base if sh.data._base is not None else sh.data
            if id(base) not in tensors:
                raise CheckpointError(f"{sh.key}: the sharded tensor views no model parameter")
            name, param = tensors[id(base)]
            view = sh.data.reshape((1,) * sh.prepend_axis_num + tuple(sh.data.shape))
            self.params[name] = (tuple(param.shape), param.dtype)
            self.chunks.setdefault(name, []).append(Chunk(
                sh.key, tuple(sh.global_offset), tuple(sh.global_shape), tuple(view.size()),
                tuple(view.stride()), view.storage_offset()))
        self.by_index = {(c.key, c.offset): (name, c) for name, cs in self.chunks.items() for c in cs}

    def nbytes(self, prefix: str = "") -> int:
        """Bytes of the parameters whose names start with `prefix` (all of them by default)."""
        return sum(math.prod(shape) * dtype.itemsize for name, (shape, dtype) in self.params.items()
                   if name.startswith(prefix))


def _leaves(state) -> Iterable:
    values = state.values() if isinstance(state, dict) else state
    for value in values:
        if isinstance(value, (dict, list)):
            yield from _leaves(value)
        else:
            yield value


class CheckpointReader:
    """Named parameters of one checkpoint; only the stored chunks that hold them are read."""

    def __init__(self, path: Path, runtime: Runtime):
        self.info = ckpt.read_info(path)
        integrity.verify(self.info.path)
        self.layout = Layout(self.info.model, runtime)
        self._storage = dcp.FileSystemReader(str(self.info.path))
        self._metadata = self._storage.read_metadata()
        keys = {chunk.key for chunks in self.layout.chunks.values() for chunk in chunks}
        self._older_keys = older_keys(keys, self._metadata.state_dict_metadata, self.info.path)
        self.bytes_read = 0

    @property
    def names(self) -> list[str]:
        return list(self.layout.params)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """{name: tensor} in the checkpoint's dtype, on the CPU."""
        out = {}
        for name in names:
            shape, dtype = self._param(name)
            out[name] = torch.empty(shape, dtype=dtype)
        self.read_into(out)
        return out

    def read_into(self, targets: dict[str, torch.Tensor]) -> None:
        """Fill each contiguous tensor in `targets` (keyed by parameter name) in place."""
        requests = []
        for name, target in targets.items():
            shape, _ = self._param(name)
            if tuple(target.shape) != shape or not target.is_contiguous():
                raise CheckpointError(f"{self.info.path}: {name} is {shape}; cannot read it into a "
                                      f"{tuple(target.shape)} tensor")
            for chunk in self.layout.chunks[name]:
                chunk = replace(chunk, key=self._older_keys.get(chunk.key, chunk.key))
                self._check(chunk)
                requests.append((chunk, chunk.view(target)))
        try:
            dcp.load({}, storage_reader=self._storage, planner=_SliceLoadPlanner(requests, self._metadata),
                     no_dist=True)
        except Exception as e:  # noqa: BLE001 - torch DCP wraps read failures in several types
            if isinstance(_cause(e), CheckpointError):
                raise _cause(e) from e
            raise CheckpointError(f"{self.info.path}: cannot read {', '.join(targets)[:200]} "
                                  f"({type(e).__name__}: {ckpt._first_line(e)})") from e
        self.bytes_read += sum(t.numel() * t.element_size() for t in targets.values())

    def _param(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        if name not in self.layout.params:
            raise CheckpointError(f"{self.info.path}: the model has no parameter {name}")
        return self.layout.params[name]

    def _check(self, chunk: Chunk) -> None:
        stored = self._metadata.state_dict_metadata.get(chunk.key)
        if stored is None or not hasattr(stored, "size"):
            raise CheckpointError(f"{self.info.path}: no tensor {chunk.key} in the checkpoint")
        have, want = tuple(stored.size), chunk.global_shape
        vocab_padding = chunk.key in _VOCAB_ROWS and have[0] >= want[0] and have[1:] == want[1:]
        if have != want and not vocab_padding:
            raise CheckpointError(f"{self.info.path}: {chunk.key} has shape {have}, the model config "
                                  f"implies {want}")


class _SliceLoadPlanner(DefaultLoadPlanner):
    """Reads the given chunks straight into the given views (no state dict).

    A module-level class on purpose: a class made per call sits in a reference cycle, and the
    views it captured (whole parameters) would live until the cyclic garbage collector ran."""

    def __init__(self, requests: list[tuple[Chunk, torch.Tensor]], metadata):
        super().__init__()
        self.requests, self.checkpoint_metadata = requests, metadata
        self.views: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def create_local_plan(self) -> LoadPlan:
        items = []
        for chunk, view in self.requests:
            want = ChunkStorageMetadata(torch.Size(chunk.offset), torch.Size(chunk.size))
            stored = self.checkpoint_metadata.state_dict_metadata[chunk.key]
            found = create_read_items_for_chunk_list(chunk.key, stored, [want])
            covered = sum(math.prod(item.lengths) for item in found)
            if covered != math.prod(chunk.size):
                raise CheckpointError(f"{chunk.key} at {chunk.offset}: the checkpoint stores "
                                      f"{covered} of its {math.prod(chunk.size)} values")
            self.views.update({(item.dest_index.fqn, tuple(item.dest_index.offset)): view for item in found})
            items += found
        return LoadPlan(items)

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self.views[(index.fqn, tuple(index.offset))]

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        pass  # the data was read straight into the view


def save_streaming(root: Path, model_cfg: ModelConfig, runtime: Runtime, produce: Produce, *, iteration: int = 0,
                   meta: CheckpointMeta | None = None) -> tuple[Path, int]:
    """Write `root/iter_<iteration>` (model only: no optimizer, no RNG) and move the tracker.

    Returns the folder and the bytes of tensor data written."""
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
    from megatron.core.dist_checkpointing.mapping import ShardedObject
    from megatron.core.dist_checkpointing.state_dict_utils import save_preprocess
    from megatron.core.dist_checkpointing.strategies.torch import (
        _replace_state_dict_keys_with_sharded_keys, mcore_to_pyt_state_dict)

    if runtime.world_size != 1:
        raise CheckpointError("save_streaming runs in one process")
    layout = Layout(model_cfg, runtime)
    state: dict[str, Any] = {"model": layout.sharded, "args": ckpt.megatron_args(model_cfg, runtime, iteration),
                             "iteration": iteration, "checkpoint_version": ckpt.CHECKPOINT_VERSION,
                             "factory": factory_state(meta, model_cfg, has_optimizer=False, world_size=None)}
    sharded, common = save_preprocess(state, True)
    sharded["common_state"] = ShardedObject("common_state", common, (1,), (0,), replica_id=0)
    sharded, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded, True)
    planner = _producing_planner_class()(layout, produce, ByteProgress(f"write {Path(root).name}", layout.nbytes()))
    root = Path(root)
    final, tmp = ckpt.iteration_dir(root, iteration), checkpoint_root.partial_dir(root, iteration)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    writer = dcp.FileSystemWriter(str(tmp), single_file_per_rank=True, thread_count=1)
    try:
        dcp.save(mcore_to_pyt_state_dict(sharded, False), storage_writer=writer, planner=planner, no_dist=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = _cause(e)
        if isinstance(cause, OSError):  # a full disk, a quota, `ulimit -f`: one line naming the folder
            raise OutputError(f"checkpoint iteration {iteration}: {os_error_line(cause, tmp)}; removed it, "
                              f"nothing was published to {root}") from None
        raise cause from e
    finally:
        planner.progress.close()
    save_config(CheckpointingConfig("torch_dist", 1), str(tmp))
    integrity.record(tmp)
    checkpoint_root.publish(root, iteration)
    log.info("checkpoint: streamed %.2f GB to %s in %.1f s", planner.bytes_written / 1e9, final,
             time.perf_counter() - t0)
    return final, planner.bytes_written


def _cause(e: BaseException) -> BaseException:
    """The first FactoryError or OSError torch DCP wrapped (it reports failures per rank), else `e`."""
    failures = getattr(e, "failures", {})  # rank -> (exception, traceback)
    inner = [exc for exc, _ in failures.values() if isinstance(exc, FactoryError)]
    inner += [found for exc, _ in failures.values() if (found := os_error_in(exc)) is not None]
    return inner[0] if inner else os_error_in(e) or e


@functools.cache
def _producing_planner_class():
    """Megatron's save planner, except each tensor write item is cut from `produce(name)`; the last
    produced parameter is kept until another one is asked for (write items come grouped by key).
    Made once (Megatron is imported lazily); see _SliceLoadPlanner on why not per call."""
    from megatron.core.dist_checkpointing.strategies.torch import MCoreSavePlanner

    class ProducingPlanner(MCoreSavePlanner):
        def __init__(self, layout: Layout, produce: Produce, progress: ByteProgress):
            super().__init__(flatten_state_dict=False)
            self.layout, self.produce, self.progress = layout, produce, progress
            self.current: tuple[str, torch.Tensor] | None = None
            self.bytes_written = 0

        def resolve_data(self, write_item: WriteItem) -> torch.Tensor | io.BytesIO:
            if write_item.type == WriteItemType.BYTE_IO:
                return super().resolve_data(write_item)
            name, chunk = self.layout.by_index[(write_item.index.fqn, tuple(write_item.index.offset))]
            if self.current is None or self.current[0] != name:
                self.current = None  # free the previous parameter before producing the next
                tensor = self.produce(name)
                shape, dtype = self.layout.params[name]
                if tuple(tensor.shape) != shape:
                    raise CheckpointError(f"{name}: produced shape {tuple(tensor.shape)}, the model has {shape}")
                self.current = (name, tensor.to(dtype).contiguous())
            view = chunk.view(self.current[1])
            self.bytes_written += view.numel() * view.element_size()
            self.progress.advance(view.numel() * view.element_size())
            return view

    return ProducingPlanner
