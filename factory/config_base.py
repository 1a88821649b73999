"""The sections every factory config has (run, runtime, parallel, model, launch) and what stages ask of it.

The full `FactoryConfig` (factory/config.py) adds each registered stage's own sections to this base;
stage code is typed against `CoreConfig` and reaches its own section through `Stage.section_of`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field

from factory.launch_config import LaunchConfig
from factory.model.config import ModelConfig
from factory.model.execution import config_problems
from factory.runtime.config import ParallelConfig, RuntimeConfig
from factory.schema import Section, rule

REPOSITORY = Path(__file__).resolve().parents[1]
"""The checkout (or installed tree) the factory runs from."""


class RunConfig(Section):
    """Names the run and where its artifacts go."""

    name: str
    """Run name, used in logs and manifests."""
    dir: Path
    """Root folder of the run; each stage writes to `<dir>/<stage>/` unless its section says otherwise. Not empty,
    not the current folder, the repository or a folder that holds either (a typo there must not write over them)."""

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        if not str(self.dir).strip() or str(self.dir) == ".":
            return [f"{prefix}.dir={str(self.dir)!r}: empty or '.'; give the run its own folder (e.g. runs/<name>)"]
        resolved = self.dir.expanduser().resolve()
        for name, place in (("the current folder", Path.cwd()), ("the repository", REPOSITORY), ("your home", Path.home())):
            rule(out, resolved != place and resolved not in place.parents, f"{prefix}.dir", self.dir,
                 f"is {name} or a folder that holds it ({place}); give the run its own folder (e.g. runs/<name>)")
        return out[:1]


class CoreConfig(Section):
    """The sections shared by every stage; stage sections are added from the registry."""

    run: RunConfig
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    model: ModelConfig | None = None
    """Model shapes; needed by the model stages."""
    launch: LaunchConfig | None = None
    """How `python -m factory.launch` starts stages: torchrun locally, or an sbatch script for Slurm."""

    def core_problems(self, dense_ep_ok: bool) -> list[str]:
        """Rules of the shared sections; `dense_ep_ok` when a stage of this config turns the model into an MoE."""

        out = self.run.problems("run") + self.runtime.problems("runtime") + self.parallel.problems("parallel")
        out += config_problems(self.runtime, self.parallel, self.model)
        if self.model is not None:
            out += self.model.problems("model")
            out += model_parallel_problems(self.model, self.parallel, dense_ep_ok=dense_ep_ok)
        out += self.launch.problems("launch") if self.launch else []
        return out

    def stage_dir(self, stage: str) -> Path:
        return self.run.dir / stage

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """sha256 of the resolved config, stable across key order."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def model_parallel_problems(m: ModelConfig, p: ParallelConfig, dense_ep_ok: bool = False) -> list[str]:
    """Divisibility of model shapes by the parallel layout, one line per problem."""
    out: list[str] = []
    tp = p.tensor
    rule(out, m.num_attention_heads % tp == 0, "model.num_attention_heads", m.num_attention_heads,
         f"must be divisible by parallel.tensor ({tp})")
    rule(out, m.query_groups % tp == 0, "model.num_query_groups", m.query_groups,
         f"must be divisible by parallel.tensor ({tp})")
    rule(out, m.ffn_hidden_size % tp == 0, "model.ffn_hidden_size", m.ffn_hidden_size,
         f"must be divisible by parallel.tensor ({tp})")
    rule(out, m.num_layers % p.pipeline == 0, "model.num_layers", m.num_layers,
         f"must be divisible by parallel.pipeline ({p.pipeline})")
    rule(out, p.context == 1, "parallel.context", p.context,
         "context parallelism is not supported: the engine does not split each sequence (and its loss and RoPE "
         "positions) over CP ranks; use 1 and shard with tensor/pipeline parallelism")
    padded = m.padded_vocab_size(tp)
    rule(out, padded % (m.make_vocab_size_divisible_by * tp) == 0 and padded >= m.vocab_size,
         "model.vocab_size", m.vocab_size, "padding to a multiple of make_vocab_size_divisible_by x TP failed")
    if m.moe is None:
        rule(out, p.expert == 1 or dense_ep_ok, "parallel.expert", p.expert, "expert parallelism needs model.moe")
        return out
    rule(out, m.moe.num_experts % p.expert == 0, "model.moe.num_experts", m.moe.num_experts,
         f"must be divisible by parallel.expert ({p.expert})")
    expert_ffn = m.moe.ffn_hidden_size or m.ffn_hidden_size
    rule(out, expert_ffn % p.expert_tensor_size == 0, "model.moe.ffn_hidden_size", expert_ffn,
         f"must be divisible by parallel.expert_tensor ({p.expert_tensor_size})")
    rule(out, tp == 1 or p.sequence_parallel, "parallel.sequence_parallel", p.sequence_parallel,
         "Megatron MoE layers with parallel.tensor > 1 need sequence_parallel=true")
    return out
