"""The `launch:` config section: Slurm resources, environment, signals, requeue, job arrays."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from factory import sbatch
from factory.schema import Section, rule

_TIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NCCL_ENV = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "NCCL_IB_TIMEOUT": "22",
    "NCCL_DEBUG": "WARN",
}
"""Defaults of `launch.nccl_env`: one CUDA work queue so Megatron's TP/SP communication overlaps in
issue order; NCCL errors abort the process instead of hanging; tensors of asynchronous collectives freed when
the collective is waited on rather than held by the allocator's stream records (what overlapped gradient
reduction and parameter gathering need); expandable allocator segments, which keep fragmentation from growing
the peak of a long run; a longer InfiniBand retry timeout for large jobs; warnings only."""


class ArrayConfig(Section):
    """A Slurm job array for the data verbs: task i runs the stage with `tasks[i]` as extra overrides."""

    tasks: list[list[str]] = Field(min_length=1)
    """Dotted overrides per task, e.g. [[data.inputs=[a.jsonl], data.output_dir=runs/x/data/a], ...];
    the data verbs have no shard option, so each task is an independent run on its own inputs and outputs."""
    max_parallel: int | None = Field(default=None, ge=1)
    """Tasks running at once (`--array=0-N%max_parallel`); unlimited when unset."""


class LaunchConfig(Section):
    """How `python -m factory.launch` starts a stage: local torchrun or a rendered sbatch script."""

    nodes: int = Field(default=1, ge=1)
    """Nodes of the Slurm job (training verbs); data verbs run one task per array element."""
    gpus_per_node: int = Field(default=8, ge=0)
    """GPUs per node (`#SBATCH --gpus-per-node`); 0 for a CPU partition (no GPU request at all)."""
    gpu_memory_gb: float = Field(default=80, gt=0)
    """Memory of one GPU in GiB (an 80 GB H100 holds 80 GiB): training whose per-GPU memory plan exceeds it
    is refused before it is queued (factory/train/memory.py; docs/stages/train.md "Memory plan")."""
    nproc_per_node: int | None = Field(default=None, ge=1)
    """Processes torchrun starts per node (`--nproc-per-node`); defaults to one per GPU, 1 without GPUs."""
    cpus_per_task: int | None = Field(default=None, ge=1)
    """`#SBATCH --cpus-per-task`; the Slurm default when unset."""
    exclusive: bool | None = None
    """`#SBATCH --exclusive` (whole nodes) for the training verbs; defaults to true on GPU nodes
    (`gpus_per_node` > 0), false on a CPU partition, where jobs may share a node."""
    partition: str | None = None
    """`#SBATCH --partition`; omitted when unset (`--partition` of `factory.launch slurm` sets it)."""
    account: str | None = None
    """`#SBATCH --account`; omitted when unset (`--account` of `factory.launch slurm`)."""
    qos: str | None = None
    """`#SBATCH --qos`; omitted when unset (`--qos`)."""
    constraint: str | None = None
    """`#SBATCH --constraint` (node features, e.g. h100); omitted when unset (`--constraint`)."""
    reservation: str | None = None
    """`#SBATCH --reservation`; omitted when unset (`--reservation`)."""
    time: str = "1-00:00:00"
    """Wall-time limit, "HH:MM:SS" or "D-HH:MM:SS" (YAML reads an unquoted 12:00:00 as seconds: accepted)."""
    job_name: str | None = None
    """`#SBATCH --job-name`; defaults to `<run.name>-<stage>`."""
    output_dir: Path | None = None
    """Folder of the Slurm logs (`%x-%j.out`, appended across requeues); defaults to `<run.dir>/logs`."""
    container_image: str | None = None
    """Run inside this container with pyxis (`srun --container-image`); excludes `venv`."""
    container_mounts: list[str] = Field(default_factory=list)
    """pyxis mounts `SRC:DST[:FLAGS]`; the repository must be mounted, the job runs in the submit dir."""
    venv: Path | None = None
    """Virtual environment the batch script activates (`source <venv>/bin/activate`); excludes a container."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables exported before `srun` (cluster fabric: NCCL_IB_HCA, UCX_NET_DEVICES...)."""
    nccl_env: dict[str, str] = Field(default_factory=lambda: dict(NCCL_ENV))
    """NCCL / CUDA variables exported before `srun`; setting this replaces the defaults (add to `env` instead)."""
    cpu_bind: Literal["none", "node", "socket", "exclusive", "core-complex"] = "none"
    """Bind each local rank's process to the CPUs near its GPU (torchrun `--numa-binding`, PyTorch >= 2.9, with
    numactl on the node): node, the GPU's NUMA node (start here); socket, its socket; exclusive, a disjoint share
    of that node's cores per rank; core-complex, one L3 cache domain. none leaves placement to the OS."""
    rdzv_port: int | None = Field(default=None, ge=1024, le=65535)
    """Port of the c10d rendezvous on the first node of the allocation; by default derived from the job
    id (10000 + id mod 20000, below Linux's ephemeral ports), so jobs sharing a node never meet."""
    signal_seconds_before_timeout: int = Field(default=300, ge=10, le=65535)
    """Slurm sends SIGUSR1 to the batch shell this long before the time limit (`--signal=B:USR1@N`); the
    training saves a checkpoint and exits, then the job requeues. Also torchrun's `--shutdown-timeout`: how
    long it waits for the workers it signals (a local launch's stop, a restart) before killing them."""
    requeue: bool = True
    """`#SBATCH --requeue`, and the script requeues itself after the pre-timeout save, so the job goes on
    in a new allocation from the latest checkpoint."""
    max_restarts: int = Field(default=3, ge=0)
    """Worker-group restarts inside one allocation (torchrun `--max-restarts`): after a crash, a hang
    (exit 124) or a planned restart (exit 75), every node restarts its workers, which resume."""
    extra_sbatch: list[str] = Field(default_factory=list)
    """More `#SBATCH` options, verbatim (e.g. --mem=0, --gres=..., --exclude=...); `--sbatch OPTION`."""
    array: ArrayConfig | None = None
    """Job array for the data verbs (tokenizer, data, synth, pack)."""
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per stage, the keys of this section that differ for its jobs, e.g. `{pretrain: {nodes: 4, time:
    "7-00:00:00"}, tokenizer: {partition: cpu, cpus_per_task: 32}}`; any key but `stages`, `array` and
    `job_name`. Read by `factory.launch slurm STAGE`, the chain (`factory.launch slurm pipeline`) and the
    training memory plan."""

    @field_validator("time", mode="before")
    @classmethod
    def _from_seconds(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            days, rest = divmod(value, 86400)
            text = f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
            return f"{days}-{text}" if days else text
        return value

    @field_validator("env", "nccl_env", mode="before")
    @classmethod
    def _values_as_text(cls, value: object) -> object:
        if isinstance(value, dict):  # YAML reads NCCL_IB_GID_INDEX: 3 as a number
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        rule(out, _TIME.match(self.time) is not None, f"{prefix}.time", self.time,
             'expected "HH:MM:SS" or "D-HH:MM:SS"')
        if _TIME.match(self.time):
            rule(out, self.signal_seconds_before_timeout < time_seconds(self.time),
                 f"{prefix}.signal_seconds_before_timeout", self.signal_seconds_before_timeout,
                 f"must be shorter than launch.time ({self.time})")
        rule(out, not (self.container_image and self.venv), f"{prefix}.venv", self.venv,
             "set either launch.venv or launch.container_image, not both")
        rule(out, self.container_image is not None or not self.container_mounts, f"{prefix}.container_mounts",
             self.container_mounts, "needs launch.container_image")
        for key in [*self.env, *self.nccl_env]:
            rule(out, _ENV_NAME.match(key) is not None, f"{prefix}.env", key, "not a valid variable name")
        if self.nproc_per_node is not None and self.gpus_per_node:
            rule(out, self.nproc_per_node <= self.gpus_per_node, f"{prefix}.nproc_per_node", self.nproc_per_node,
                 f"more processes than GPUs per node ({self.gpus_per_node})")
        for key, value in self.slurm_names().items():  # repr: a blank is the problem, so show it
            rule(out, value is None or sbatch.name_problem(value) is None, f"{prefix}.{key}", repr(value),
                 sbatch.name_problem(value or "") or "")
        rule(out, self.job_name is None or sbatch.line_problem(self.job_name) is None, f"{prefix}.job_name",
             repr(self.job_name), sbatch.line_problem(self.job_name or "") or "")
        for option in self.extra_sbatch:
            rule(out, option.startswith("-") and "\n" not in option, f"{prefix}.extra_sbatch", option,
                 "expected one sbatch option such as --exclusive")
        return out or [line for stage in self.stages for line in self._stage_problems(prefix, stage)]

    def for_stage(self, stage: str) -> LaunchConfig:
        """This section with the keys of `stages[stage]` in place of its own (as it is while that entry is
        invalid: `problems` names it, and a loaded config has none)."""
        try:
            return self._merged(stage)
        except ValidationError:
            return self

    def _merged(self, stage: str) -> LaunchConfig:
        own = self.stages.get(stage)
        if not own:
            return self
        return LaunchConfig.model_validate({**self.model_dump(exclude={"stages"}), **own})

    def _stage_problems(self, prefix: str, stage: str) -> list[str]:
        key = f"{prefix}.stages.{stage}"
        if wrong := sorted(set(self.stages[stage]) & NOT_PER_STAGE):
            return [f"{key}.{name}: set for the whole launch section, not per stage" for name in wrong]
        try:
            merged = self._merged(stage)
        except ValidationError as e:
            return [f"{key}.{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}" for err in e.errors()]
        return merged.problems(key)

    def slurm_names(self) -> dict[str, str | None]:
        """The #SBATCH options that name a Slurm object (none of which can hold a blank), by option name."""
        return {"partition": self.partition, "account": self.account, "qos": self.qos,
                "constraint": self.constraint, "reservation": self.reservation}

    @property
    def processes_per_node(self) -> int:
        """torchrun's `--nproc-per-node`: `nproc_per_node`, else one per GPU, else 1."""
        return self.nproc_per_node or self.gpus_per_node or 1

    @property
    def whole_nodes(self) -> bool:
        """Whether training jobs ask for `--exclusive` nodes."""
        return self.gpus_per_node > 0 if self.exclusive is None else self.exclusive


NOT_PER_STAGE = {"stages", "array", "job_name"}
"""Launch keys `launch.stages.<stage>` may not set: a chain names its jobs itself and runs no arrays."""


def time_seconds(text: str) -> int:
    """Seconds in a validated Slurm time limit."""
    days, hours, minutes, seconds = _TIME.match(text).groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
