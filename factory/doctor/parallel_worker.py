"""torchrun worker of the doctor's parallel check: TP=2 (dense) and EP=2 (MoE) give the TP=1/EP=1 logits.

Usage: torchrun --standalone --nproc-per-node 2 -m factory.doctor.parallel_worker TIER OUT_DIR
Both modes run in one launch. Rank 0 writes OUT_DIR/result.json: per mode, the max |logit difference| over
both ranks and the parameters one rank holds against the unsharded model's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from factory.doctor import configs
from factory.doctor.tiers import TIERS
from factory.model.build import build_gpt_model
from factory.process_exit import exit_process

VOCAB_SIZE = 256
MODES = {"tensor": False, "expert": True}
"""The parallel layout each mode shards, and whether its model is an MoE."""


def _logits(model, cfg, device: torch.device) -> torch.Tensor:
    """Full-vocabulary logits of a fixed batch (the same on every rank), gathered over the TP shards."""
    from megatron.core import tensor_parallel

    seq = cfg.model.seq_length
    tokens = torch.randint(0, VOCAB_SIZE, (2, seq), generator=torch.Generator().manual_seed(0)).to(device)
    positions = torch.arange(seq, device=device).expand(2, seq)
    with torch.no_grad():
        logits = model.eval()(tokens, positions, None)
    full = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
    return full[..., :VOCAB_SIZE].float()


def _config(shapes, work_dir: Path, moe: bool, parallel: dict):
    raw = configs.base(shapes, work_dir, VOCAB_SIZE, moe=moe)
    raw["parallel"] = parallel
    return configs.validated(raw)


def _compare(shapes, work_dir: Path, mode: str, moe: bool) -> dict:
    """Save the unsharded model and load it sharded along `mode` (the factory's checkpoint save and load, as a run
    resumed at another layout uses them); compare logits against rank 0's reference."""
    from factory.runtime.runtime import init_runtime, release_parallel_state
    from factory.train import checkpoint as ckpt

    release_parallel_state()
    reference_cfg = _config(shapes, work_dir, moe, {})
    runtime = init_runtime(reference_cfg.runtime, reference_cfg.parallel)
    reference_model = build_gpt_model(reference_cfg.model, runtime)
    reference = _logits(reference_model, reference_cfg, runtime.device)
    torch.distributed.broadcast(reference, src=0)  # every rank compares against the weights that are saved
    checkpoint = work_dir / f"{mode}-checkpoint"
    ckpt.save(checkpoint, 0, reference_model, reference_cfg.model, runtime)

    release_parallel_state()
    cfg = _config(shapes, work_dir, moe, {mode: 2})
    runtime = init_runtime(cfg.runtime, cfg.parallel)
    model = build_gpt_model(cfg.model, runtime)
    ckpt.load(checkpoint, model, runtime, restore_rng=False)
    diff = (_logits(model, cfg, runtime.device) - reference).abs().max()
    torch.distributed.all_reduce(diff, op=torch.distributed.ReduceOp.MAX)
    return {"max_abs_logit_diff": diff.item(), "local_params": sum(p.numel() for p in model.parameters()),
            "unsharded_params": sum(p.numel() for p in reference_model.parameters())}


def main(tier: str, out_dir: Path) -> None:
    from factory.runtime.runtime import shutdown_runtime

    shapes = TIERS[tier][0]
    try:
        result = {mode: _compare(shapes, out_dir, mode, moe) for mode, moe in MODES.items()}
        if torch.distributed.get_rank() == 0:
            (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    finally:
        shutdown_runtime()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
    exit_process(0)  # the interpreter's teardown of torch and Megatron costs ~1 CPU-s
