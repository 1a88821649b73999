"""The MoE an upcycle produces from a dense checkpoint: its model config, the per-layer ExpertPlan, fit checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factory.errors import CheckpointError, ConfigError
from factory.model.config import ModelConfig
from factory.upcycle.config import UpcycleConfig
from factory.upcycle.routing import expert_scale


@dataclass(frozen=True)
class ExpertPlan:
    """How one dense FFN becomes an MoE layer (the same for every layer)."""

    num_experts: int
    granularity: int
    alpha: float
    """Factor on each routed expert's linear_fc2 (see routing.py)."""
    shared_size: int = 0
    """Leading intermediate neurons that become the shared expert (0: none)."""
    shared_gate: bool = False
    """Zero gate weight (sigmoid = 1/2) and the shared linear_fc2 doubled: exact, powers of two."""
    router_zero: bool = False
    router_std: float = 0.02
    drop_fraction: float = 0.0
    noise_std: float = 0.0

    def routed_ffn(self, ffn: int) -> int:
        """Intermediate size of one routed expert for a dense FFN of `ffn` neurons."""
        return (ffn - self.shared_size) // self.granularity



# Dense shape fields a `model:` section must share with the checkpoint it describes.
_SHAPE_KEYS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "query_groups",
               "vocab_size")


def check_fits(dense: ModelConfig, declared: ModelConfig | None, source: Path) -> None:
    """The checkpoint must be dense and match the config's `model:` section where one is given."""
    if dense.moe is not None:
        raise CheckpointError(f"{source}: already a MoE model (num_experts={dense.moe.num_experts}); "
                              "upcycle needs a dense checkpoint")
    if declared is None:
        return
    problems = [f"model.{key}={getattr(declared, key)}: the dense checkpoint {source} has {getattr(dense, key)}"
                for key in _SHAPE_KEYS if getattr(declared, key) != getattr(dense, key)]
    if problems:
        raise CheckpointError("\n".join(problems))


def moe_model(dense: ModelConfig, upcycle_config: UpcycleConfig) -> ModelConfig:
    """`dense` with `moe` set; routed expert FFN = (F - shared) / G, checked against upcycle.moe."""
    ffn, g = dense.ffn_hidden_size, upcycle_config.granularity
    shared = upcycle_config.moe.shared_expert_ffn_hidden_size or 0
    if shared >= ffn:
        raise ConfigError(f"upcycle.moe.shared_expert_ffn_hidden_size={shared}: must be smaller than the "
                          f"dense ffn_hidden_size ({ffn}); the rest becomes the routed experts")
    routed = ffn - shared
    if routed % g:
        what = f"dense ffn_hidden_size {ffn}" + (f" minus {shared} shared" if shared else "")
        raise ConfigError(f"upcycle.granularity={g}: does not divide the routed FFN ({what} = {routed})")
    want = routed // g
    got = upcycle_config.moe.ffn_hidden_size
    if got is not None and got != want:
        raise ConfigError(f"upcycle.moe.ffn_hidden_size={got}: must be {want} = ({ffn} - {shared} shared) / "
                          f"granularity {g} for this dense checkpoint (or leave it unset)")
    return dense.model_copy(update={"moe": upcycle_config.moe.model_copy(update={"ffn_hidden_size": want})})


def expert_plan(dense: ModelConfig, upcycle_config: UpcycleConfig) -> ExpertPlan:
    m = upcycle_config.moe
    return ExpertPlan(
        num_experts=m.num_experts, granularity=upcycle_config.granularity,
        alpha=expert_scale(m, upcycle_config.granularity, upcycle_config.router_init),
        shared_size=m.shared_expert_ffn_hidden_size or 0, shared_gate=m.shared_expert_gate,
        router_zero=upcycle_config.router_init == "zero", router_std=upcycle_config.router_std or dense.init_method_std,
        drop_fraction=upcycle_config.drop_fraction if upcycle_config.mode == "drop" else 0.0,
                      noise_std=upcycle_config.noise_std)
