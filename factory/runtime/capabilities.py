"""What a process's device and libraries can run: the facts every decision about how a model runs is made from.

`probe` reads them from the live process (the runtime calls it once CUDA and Transformer Engine are settled);
`planned` states them for a dry run or a plan made on a machine without the job's GPU. The decision itself
(factory/model/execution.py) never looks at torch or the machine: tests hand it any capability set.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only
    import torch

PLANNED_GPU = "H100"
"""The GPU a plan assumes when it cannot see one: Hopper (compute capability 9.0), the presets' hardware."""
APEX_GRAD_ACCUMULATION = "fused_weight_gradient_mlp_cuda"
"""Apex's extension that fuses weight-gradient accumulation into the GEMM. Megatron's own linears use it (the
output layer is one even in a Transformer Engine model), so gradient-accumulation fusion needs it."""


@dataclass(frozen=True)
class Capabilities:
    """Kernels and hardware features a run can use."""

    cuda: bool
    device_name: str = "cpu"
    compute_capability: tuple[int, int] | None = None
    """(major, minor): (9, 0) for H100/H200, (8, 0) for A100; None without CUDA."""
    transformer_engine: bool = False
    """Transformer Engine layers are built (not merely importable)."""
    te_version: tuple[int, int] | None = None
    """Transformer Engine's (major, minor); None when TE is unused, or planned for nodes this machine cannot read."""
    apex_grad_accumulation: bool = False
    """Apex's fused weight-gradient extension is importable."""
    planned: bool = False
    """Stated for a plan rather than read from a live device."""

    def te_at_least(self, major: int, minor: int) -> bool:
        """Transformer Engine layers of at least this version (an unread version counts as recent)."""
        return self.transformer_engine and (self.te_version is None or self.te_version >= (major, minor))

    @property
    def fp8_tensor_cores(self) -> bool:
        """FP8 GEMMs: Ada (8.9), Hopper (9.0) and newer."""
        return self.cuda and self.compute_capability is not None and self.compute_capability >= (8, 9)

    def describe(self) -> str:
        if not self.cuda:
            return "CPU"
        sm = f"sm_{self.compute_capability[0]}{self.compute_capability[1]}" if self.compute_capability else "sm ?"
        te = "no Transformer Engine" if not self.transformer_engine else (
            "Transformer Engine " + (".".join(map(str, self.te_version)) if self.te_version else "(version unread)"))
        apex = "Apex fused wgrad" if self.apex_grad_accumulation else "no Apex fused wgrad"
        where = "planned " if self.planned else ""
        return f"{where}{self.device_name} ({sm}), {te}, {apex}"


CPU = Capabilities(cuda=False)


def installed_te_version() -> tuple[int, int] | None:
    """(major, minor) of the transformer_engine installed here, or None."""
    for name in ("transformer_engine", "transformer-engine"):
        try:
            return _major_minor(importlib.metadata.version(name))
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(version)
    return int(match.group(1)), int(match.group(2))


def _apex_grad_accumulation() -> bool:
    return importlib.util.find_spec(APEX_GRAD_ACCUMULATION) is not None


def probe(device: torch.device, transformer_engine: bool) -> Capabilities:
    """The live process's capabilities on `device`, with TE layers as the runtime decided."""
    import torch

    if device.type != "cuda":
        return CPU
    return Capabilities(
        cuda=True, device_name=torch.cuda.get_device_name(device),
        compute_capability=tuple(torch.cuda.get_device_capability(device)),
        transformer_engine=transformer_engine, te_version=installed_te_version() if transformer_engine else None,
        apex_grad_accumulation=_apex_grad_accumulation())


def planned(on_gpu: bool, transformer_engine: bool) -> Capabilities:
    """Capabilities a plan assumes: the planning GPU, and the libraries of this machine, which is taken to share
    the job's environment (as a login node does); TE as the runtime config plans it."""
    if not on_gpu:
        return Capabilities(cuda=False, planned=True)
    return Capabilities(
        cuda=True, device_name=PLANNED_GPU, compute_capability=(9, 0), transformer_engine=transformer_engine,
        te_version=installed_te_version() if transformer_engine else None,
        apex_grad_accumulation=_apex_grad_accumulation(), planned=True)
