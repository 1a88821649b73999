"""Checks of the runtime and the model builder: process setup, and dense and MoE GPTModels that run."""

from __future__ import annotations

import torch

from factory.doctor import configs
from factory.doctor.checks import CheckFailed, DoctorContext
from factory.doctor.probe import experts_built
from factory.model.build import build_gpt_model, parameter_counts


def runtime_init(context: DoctorContext) -> str:
    """The runtime initializes the process group and Megatron's parallel state for this tier's device."""
    import megatron.core

    from factory.runtime.runtime import runtime_session

    cfg = configs.validated(configs.base(context.shapes, context.work_dir, 256))
    with runtime_session(cfg.runtime, cfg.parallel) as runtime:
        backend = torch.distributed.get_backend()
        return (f"{runtime.capabilities.describe()}, {runtime.precision}, {backend}, world {runtime.world_size}, torch "
                f"{torch.__version__}, megatron-core {megatron.core.__version__}")


def _build_and_run(context: DoctorContext, moe: bool) -> str:
    from factory.runtime.runtime import runtime_session

    cfg = configs.validated(configs.base(context.shapes, context.work_dir, 256, moe=moe))
    with runtime_session(cfg.runtime, cfg.parallel) as runtime:
        model = build_gpt_model(cfg.model, runtime)
        built = sum(p.numel() for p in model.parameters())
        expected = parameter_counts(cfg.model).total
        if built != expected:
            raise CheckFailed(f"built {built:,} parameters, the parameter count says {expected:,}")
        seq = cfg.model.seq_length
        tokens = torch.randint(0, 256, (2, seq), generator=torch.Generator().manual_seed(0)).to(runtime.device)
        positions = torch.arange(seq, device=runtime.device).expand(2, seq)
        logits = model(tokens, positions, None, labels=None)
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        grads = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
        params = sum(1 for _ in model.parameters())
        if not torch.isfinite(logits).all() or grads < params:
            raise CheckFailed(f"finite logits {bool(torch.isfinite(logits).all())}, {grads}/{params} "
                              "parameters got a gradient")
        ran = experts_built(model)
        return (f"{built:,} parameters, forward + backward finite, {grads}/{params} parameters with gradients"
                + (f"; ran {ran}" if ran else ""))


def dense_model(context: DoctorContext) -> str:
    return _build_and_run(context, moe=False)


def moe_model(context: DoctorContext) -> str:
    return _build_and_run(context, moe=True)
