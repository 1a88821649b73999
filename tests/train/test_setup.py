"""Run setup: learning-rate resolution and batch arithmetic (each refusal one line), and the model, optimizer
and MoE losses that build_model makes."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch

from factory.errors import ConfigError
from factory.model.config import ModelConfig
from factory.train.checkpoint_info import CheckpointInfo
from factory.train.checkpoint_meta import CheckpointMeta
from factory.train.config import TrainConfig
from factory.train.setup import StartPoint, learning_rates, micro_batches_per_rank
from tests.conftest import TINY_DENSE, TINY_MOE, make_config

MODEL = ModelConfig.model_validate(TINY_DENSE["model"])


def _config(**optimizer) -> TrainConfig:
    return TrainConfig.model_validate({"train_iters": 4, "global_batch_size": 4, "micro_batch_size": 2,
                                       "optimizer": optimizer})


def _start(resuming: bool, **meta) -> StartPoint:
    return StartPoint(MODEL, CheckpointInfo(Path("/c/iter_0000004"), 4, MODEL, CheckpointMeta(**meta)), resuming)


def test_learning_rates_from_config_inherited_or_kept_on_resume():
    assert learning_rates("pretrain", _config(lr=1e-3), StartPoint(MODEL, None, False)) == (1e-3, 1e-4)
    assert learning_rates("cpt", _config(), _start(False, final_lr=2e-5)) == pytest.approx((2e-5, 2e-6))
    assert learning_rates("cpt", _config(lr=9.0), _start(True, peak_lr=1e-3, min_lr=1e-5)) == (1e-3, 1e-5)


def test_learning_rate_refusals_name_the_key():
    with pytest.raises(ConfigError, match="cpt.optimizer.lr: not set, and the starting checkpoint records no"):
        learning_rates("cpt", _config(), _start(False))
    with pytest.raises(ConfigError, match=r"pretrain.optimizer.min_lr=0.1: exceeds the peak LR 0.01"):
        learning_rates("pretrain", _config(lr=1e-2, min_lr=0.1), StartPoint(MODEL, None, False))


def test_micro_batches_per_rank():
    assert micro_batches_per_rank("pretrain", _config(lr=1.0), 1) == 2
    with pytest.raises(ConfigError, match=r"global_batch_size=4: must be divisible by micro_batch_size x "
                                          r"data-parallel size \(2 x 3\)"):
        micro_batches_per_rank("pretrain", _config(lr=1.0), 3)


# --- the model, optimizer and MoE losses that build_model sets up ---------------------------------------------

def _moe_training(runtime, aux_loss_coeff: float = 1e-2, **model):
    """setup.build_model on a tiny 4-expert top-2 MoE (fp32 Adam, no weight decay)."""
    from factory.train.setup import build_model

    moe = {"num_experts": 4, "router_topk": 2, "token_dispatcher": "allgather", "aux_loss_coeff": aux_loss_coeff}
    model_cfg = make_config(TINY_MOE, model={**model, "moe": moe}).model
    train = TrainConfig.model_validate({"train_iters": 1, "global_batch_size": 4, "micro_batch_size": 4,
                                        "optimizer": {"lr": 1e-3, "weight_decay": 0.0}})
    return model_cfg, *build_model(model_cfg, runtime, train, 1e-3, 1e-3)


def _forward_backward(runtime, ddp, step, batch, tokens: torch.Tensor) -> None:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    with runtime.compute_context():
        ddp.zero_grad_buffer()
        get_forward_backward_func()(forward_step_func=step, data_iterator=iter([batch]), model=[ddp],
                                    num_microbatches=1, seq_length=tokens.shape[1],
                                    micro_batch_size=tokens.shape[0], forward_only=False)


def test_the_built_config_is_final(runtime):
    """Every TransformerConfig field comes from transformer_config(); only the call-time hooks are set later."""
    from megatron.core.transformer.moe.router import TopKRouter

    from factory.model.build import Execution, transformer_config
    from factory.train.setup import CALL_TIME_HOOKS

    model_cfg, model, _, _ = _moe_training(runtime)
    decided = transformer_config(model_cfg, runtime, Execution(per_token_loss=True))

    def comparable(value):  # init methods are partials made afresh by each config
        return (value.func, value.args, value.keywords) if isinstance(value, functools.partial) else value

    changed = {f.name for f in dataclasses.fields(decided)
               if comparable(getattr(model.config, f.name)) != comparable(getattr(decided, f.name))}
    # one process: no data-parallel overlap, so no no_sync_func / grad_sync_func
    assert changed == {"finalize_model_grads_func", "grad_scale_func"} and changed <= set(CALL_TIME_HOOKS)
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    assert len(routers) == model_cfg.num_layers and all(r.calculate_per_token_loss for r in routers)


def test_aux_loss_gradient_does_not_depend_on_the_tokens_per_micro_batch(runtime):
    """The same rows once and four times over route the same way: the router's aux-loss gradient is the same."""
    _, model, ddp, _ = _moe_training(runtime)

    def aux_loss_only(data_iterator, net):
        tokens = next(data_iterator)
        output = net(tokens, torch.arange(tokens.shape[1]).expand_as(tokens), None)
        return output, lambda out: ((out * 0).sum(), torch.tensor(tokens.numel(), dtype=torch.int), {})

    row = torch.randint(0, 250, (1, 16), generator=torch.Generator().manual_seed(1))
    grads = []
    for copies in (1, 4):
        _forward_backward(runtime, ddp, aux_loss_only, row.repeat(copies, 1), row.repeat(copies, 1))
        grads.append(model.decoder.layers[0].mlp.router.weight.main_grad.clone())
    assert grads[0].norm() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-2, atol=1e-2 * grads[0].abs().max().item())


def _biased_expert_load(runtime, aux_loss_coeff: float, steps: int = 300) -> tuple[float, float]:
    """Max/mean expert load over the first 10 and the last 100 of `steps` steps of a tiny MoE whose routers
    start sending every token to expert 0 (top-2 of 4: max/mean 2.0)."""
    from factory.train.moe_stats import ExpertLoad, imbalance
    from factory.train.step import make_forward_step

    seq, rows = 32, 4
    _, model, ddp, optimizer = _moe_training(runtime, aux_loss_coeff, seq_length=seq)
    with torch.no_grad():  # every token's hidden state gets a common direction that router row 0 follows
        model.embedding.word_embeddings.weight[:, 0] += 1.0
        for layer in model.decoder.layers:
            layer.mlp.router.weight[0] = 0.0
            layer.mlp.router.weight[0, 0] = 0.3
    optimizer.reload_model_params()
    step, load, gen = make_forward_step(0.0, runtime.device), ExpertLoad(model), torch.Generator().manual_seed(0)
    windows = {}
    for i in range(1, steps + 1):
        text = torch.randint(0, 250, (rows, 4), generator=gen).repeat(1, seq // 4 + 1)[:, :seq + 1]  # 4-grams
        batch = {"tokens": text[:, :-1], "labels": text[:, 1:], "loss_mask": torch.ones(rows, seq),
                 "position_ids": torch.arange(seq).expand(rows, seq)}
        _forward_backward(runtime, ddp, step, batch, batch["tokens"])
        with runtime.compute_context():
            optimizer.step()
        if i in (10, steps - 100, steps):  # load since the previous of these steps
            windows[i] = max(imbalance(counts) for counts in load.take().values())
    load.close()
    return windows[10], windows[steps]


def test_aux_loss_spreads_a_biased_router(runtime):
    start, end = _biased_expert_load(runtime, aux_loss_coeff=1e-2)
    assert start == pytest.approx(2.0) and end < 1.7
    assert _biased_expert_load(runtime, aux_loss_coeff=0.0) == (pytest.approx(2.0), pytest.approx(2.0))
