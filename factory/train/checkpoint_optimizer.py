"""Optimizer state in a checkpoint, loadable at any TP/PP/EP/DP layout.

Megatron's optimizer is shaped by the layout that built it: with expert parallelism (EP > 1, or an expert
tensor-parallel size other than TP) it is two optimizers chained, one for the dense and one for the expert
parameters, and by default their tensors are keyed `chained_0.optimizer...` / `chained_1.optimizer...`, while
at EP1 the experts sit in the one optimizer (`optimizer...`). The non-tensor part (param groups numbering the
parameters per optimizer, the Adam step) is in the checkpoint's common state, in that same shape.

The format written here is the one Megatron-LM writes with `--dist-ckpt-optim-fully-reshardable`
(recorded as the checkpoint's `content_metadata`): no chained prefix, and each Adam tensor keyed and sharded
like the model parameter it belongs to (`optimizer.state.exp_avg.<model key>`; the distributed optimizer
writes the same canonical tensors, `fully_reshardable`). Any layout reads its share of them. Loading takes
only those tensors and the step (one number, shared by every parameter) from the checkpoint; the param
groups are the loading run's own, which its config builds the same way (the LR scheduler then restores the
learning rate). Checkpoints saved before this format (`fully_sharded_model_space`, chained prefixes) load
at a layout that splits the optimizer the same way; elsewhere `layout_refusal` says so in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from factory.runtime.config import ParallelConfig

if TYPE_CHECKING:  # for annotations only
    from megatron.core.optimizer import MegatronOptimizer

    from factory.train.checkpoint_info import CheckpointInfo

METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True,
            "singleton_local_shards": False}
"""How the optimizer state is keyed and sharded: Megatron-LM's `get_sharded_sd_metadata` with
`--dist-ckpt-optim-fully-reshardable`."""
LEGACY_METADATA = {"distrib_optim_sharding_type": "fully_sharded_model_space"}
"""What this project passed before METADATA (no `content_metadata` in those checkpoints)."""
TENSORS = "optimizer_tensors"
"""The load request's key for the optimizer's tensors: not `optimizer`, where the checkpoint's common state
(in the saving layout's shape) is merged into the result."""


def to_save(optimizer: MegatronOptimizer, model_sd: dict) -> dict:
    """The optimizer's sharded state dict in the reshardable format."""
    return optimizer.sharded_state_dict(model_sd, is_loading=False, metadata=METADATA)


def load_request(optimizer: MegatronOptimizer, model_sd: dict, metadata: dict) -> tuple[dict, dict]:
    """(the tensors to load, keyed as `metadata` wrote them; the rest of this optimizer's state dict)."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace, extract_matching_values
    from megatron.core.dist_checkpointing.mapping import LocalNonpersistentObject, ShardedBase

    wanted = optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=metadata)
    tensors, rest = extract_matching_values(wanted, lambda v: isinstance(v, ShardedBase))
    # What dist_checkpointing.load would hand back as it is (Megatron marks param ids this way).
    dict_list_map_inplace(lambda v: v.unwrap() if isinstance(v, LocalNonpersistentObject) else v, rest)
    return tensors, rest


def restore(optimizer: MegatronOptimizer, tensors: dict, rest: dict, saved_common: Any) -> None:
    """Load the loaded `tensors` with this optimizer's own param groups (`rest`), and the checkpoint's step."""
    from megatron.core.dist_checkpointing.dict_utils import merge

    state = merge(rest, tensors)
    steps = set(_steps(saved_common))
    if len(steps) > 1:  # Megatron keeps one step for all (chained) optimizers
        raise ValueError(f"the optimizer state records several Adam steps {sorted(steps)}")
    if steps:
        _put_step(state, steps.pop())
    optimizer.load_state_dict(state)


def _steps(tree: Any, in_groups: bool = False):
    """Every Adam step recorded in an optimizer's common state: `common_step` (Megatron's non-distributed
    optimizers) or a param group's `step` (the distributed optimizer, fused Adam)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "common_step" or (in_groups and key == "step" and value is not None):
                yield int(value.item() if isinstance(value, torch.Tensor) else value)
            else:
                yield from _steps(value, in_groups or key == "param_groups")
    elif isinstance(tree, list):
        for value in tree:
            yield from _steps(value, in_groups)


def _put_step(tree: Any, step: int, in_groups: bool = False) -> None:
    """Give every parameter's Adam state (torch Adam keeps the step per parameter) and every param group that
    has a step (the distributed optimizer, fused Adam) the checkpoint's step."""
    if isinstance(tree, dict):
        if "exp_avg" in tree:
            tree["step"] = torch.tensor(float(step), dtype=torch.float32)
        if in_groups and "step" in tree:
            tree["step"] = step
        for key, value in tree.items():
            _put_step(value, step, in_groups or key == "param_groups")
    elif isinstance(tree, list):
        for value in tree:
            _put_step(value, step, in_groups)


def splits_experts(parallel: ParallelConfig) -> bool:
    """Whether Megatron gives the expert parameters an optimizer of their own at this layout."""
    return parallel.expert > 1 or parallel.expert_tensor_size != parallel.tensor


def layout_refusal(info: CheckpointInfo, parallel: ParallelConfig) -> str | None:
    """Why a checkpoint's optimizer state cannot load at `parallel` (one line with the way out), else None.
    Only checkpoints of the older format, saved with the experts' optimizer split otherwise, are refused."""
    if info.content_metadata is not None or info.model.moe is None or not info.meta.has_optimizer:
        return None
    saved = info.parallel
    if splits_experts(saved) == splits_experts(parallel):
        return None
    return (f"{info.path}: its optimizer state was saved at {saved.describe()} in the older per-layout format "
            f"(chained optimizer keys), which loads only where the expert parameters have "
            f"{'an' if splits_experts(saved) else 'no'} optimizer of their own, not at {parallel.describe()}; "
            f"resume at the saved layout (a save there writes the reshardable format), or continue these "
            f"weights with fresh optimizer state: cpt.init_from={info.path} cpt.reset_optimizer=true")
