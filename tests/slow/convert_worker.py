"""torchrun worker: save a tiny checkpoint at TP=2 (dense), EP=2 (MoE) and PP=2 (dense), plus references.

Usage: torchrun --standalone --nproc-per-node 2 tests/slow/convert_worker.py OUT_DIR
One process group for the three layouts (Megatron's parallel state is rebuilt per layout), so they cost one
start-up. For each MODE in tp, ep, pp: OUT_DIR/MODE/ckpt (the checkpoint) and, for tp/ep on rank 0,
OUT_DIR/MODE/reference.pt (tokens, logits, sizes); for pp, each rank writes OUT_DIR/pp/stage<rank>.pt: its
parameters under full-model layer numbers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from factory.process_exit import exit_process

MODES = {"tp": "tensor", "ep": "expert", "pp": "pipeline"}


def save_layout(mode: str, out_dir: Path) -> None:
    from megatron.core import tensor_parallel

    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import init_runtime, release_parallel_state
    from factory.train.checkpoint import save
    from tests.conftest import TINY_DENSE, TINY_MOE, make_config

    release_parallel_state()
    base = TINY_MOE if mode == "ep" else TINY_DENSE
    cfg = make_config(base, parallel={MODES[mode]: 2})
    rt = init_runtime(cfg.runtime, cfg.parallel)
    model = build_gpt_model(cfg.model, rt)
    if mode == "pp":
        save(out_dir / "ckpt", 1, model, cfg.model, rt)
        offset = rt.rank * cfg.model.num_layers // 2
        renamed = {re.sub(r"^decoder\.layers\.(\d+)\.", lambda m: f"decoder.layers.{int(m[1]) + offset}.", k): v
                   for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and "_extra" not in k}
        torch.save(renamed, out_dir / f"stage{rt.rank}.pt")
        return
    tokens = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.eval()(tokens, torch.arange(16).expand(2, 16), None)
    logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)[..., : cfg.model.vocab_size]
    save(out_dir / "ckpt", 1, model, cfg.model, rt)
    if rt.rank == 0:
        torch.save({"tokens": tokens, "logits": logits,
                    "local_params": sum(p.numel() for p in model.parameters())}, out_dir / "reference.pt")


def main(out: Path) -> None:
    from factory.runtime.runtime import shutdown_runtime

    for mode in MODES:
        save_layout(mode, out / mode)
    shutdown_runtime()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    exit_process(0)  # the interpreter's teardown of torch and Megatron costs ~1 CPU-s
