"""Loading a checkpoint whose keys differ from the model's in the two ways that are expected.

CPU-local and Transformer Engine models store their weights under the same keys (TE's layout, see
factory/model/build.py `te_checkpoint_keys`), with two differences a load bridges:

- MoE checkpoints written before the layouts were joined store each layer's pre-MLP norm under the dense
  layer's fused key `mlp.linear_fc1.layer_norm_weight`; the model (and its optimizer state) reads it from
  there, with one info line. Nothing a user saved becomes unreadable.
- TE modules with no local counterpart (core attention, the MoE pre-MLP norm) keep `_extra_state` (FP8
  scaling state; empty without FP8). A checkpoint written by local layers has none, so those modules keep
  their own, as Megatron's HybridModel loader does for state a GPT checkpoint lacks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Collection, Iterable

log = logging.getLogger(__name__)

OLDER_KEYS = {"pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"}
"""Part of a key -> what MoE checkpoints written before the joined layout have in its place."""
_EXTRA_STATE = "._extra_state"


def older_keys(keys: Iterable[str], stored: Collection[str], path: Path) -> dict[str, str]:
    """{key: the older key it is stored under} for those of `keys` the checkpoint at `path` (whose keys are
    `stored`) holds only under an older name; logs one info line when there are any."""
    renamed = {}
    for key in keys:
        if key in stored:
            continue
        for part, older in OLDER_KEYS.items():
            if part in key and key.replace(part, older) in stored:
                renamed[key] = key.replace(part, older)
    if renamed:
        log.info("checkpoint: %s stores MoE pre-MLP norms under the older key mlp.linear_fc1.layer_norm_weight; "
                 "read from there (saves use pre_mlp_layernorm.weight, as Transformer Engine does)", path)
    return renamed


def stored_keys(path: Path) -> set[str]:
    """The keys of every tensor and object in the torch_dist checkpoint at `path` (objects as `key/shard_...`)."""
    import torch.distributed.checkpoint as dcp

    return set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def fit_to_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Point the sharded entries of `state` (model, optimizer) at what the checkpoint at `path` stores: older
    keys where it has only those, and the module's own value for a missing `_extra_state`."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace, nested_values
    from megatron.core.dist_checkpointing.mapping import (LocalNonpersistentObject, ShardedObject, ShardedTensor,
                                                          ShardedTensorFactory)

    stored = stored_keys(path)
    tensors = [v for v in nested_values(state) if isinstance(v, (ShardedTensor, ShardedTensorFactory))]
    renamed = older_keys({t.key for t in tensors}, stored, path)
    for tensor in tensors:
        tensor.key = renamed.get(tensor.key, tensor.key)
    kept = 0

    def keep_missing_extra_state(value: Any) -> Any:
        nonlocal kept
        if isinstance(value, ShardedObject) and value.key.endswith(_EXTRA_STATE) and value.unique_key not in stored:
            kept += 1
            return LocalNonpersistentObject(value.data)
        return value

    dict_list_map_inplace(keep_missing_extra_state, state)
    if kept:
        log.info("checkpoint: %s has no extra state for %d Transformer Engine module shards (written by local "
                 "layers); they keep their own", path, kept)
