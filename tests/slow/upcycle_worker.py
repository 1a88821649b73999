"""torchrun worker: an upcycled checkpoint loaded at EP=1 and at EP=2 gives the dense model's logits.

Usage: torchrun --standalone --nproc-per-node 2 tests/slow/upcycle_worker.py DENSE_CKPT MOE_CKPT OUT_DIR
Rank 0 writes OUT_DIR/result.json with max |logit difference| to the dense model for EP=1 and EP=2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _logits_of(path: Path, parallel: dict):
    from megatron.core import parallel_state

    from factory.model.build import build_gpt_model
    from factory.runtime.config import ParallelConfig, RuntimeConfig
    from factory.runtime.runtime import init_runtime
    from factory.train import checkpoint as ckpt
    from factory.upcycle.weights import logits, probe_tokens

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    rt = init_runtime(RuntimeConfig(device="cpu", precision="fp32"), ParallelConfig(**parallel))
    info = ckpt.read_info(path)
    model = build_gpt_model(info.model, rt)
    ckpt.load(path, model, rt, restore_rng=False)
    tokens = probe_tokens(info.model.vocab_size, 2, info.model.seq_length, seed=0)
    local = sum(p.numel() for p in model.parameters())
    return logits(model, tokens, info.model.vocab_size), local, rt


def main(dense: Path, moe: Path, out_dir: Path) -> None:
    from factory.runtime.runtime import shutdown_runtime

    ref, _, _ = _logits_of(dense, {})
    ep1, params_ep1, _ = _logits_of(moe, {})
    ep2, params_ep2, rt = _logits_of(moe, {"expert": 2})
    if rt.rank == 0:
        result = {"ep1": (ep1 - ref).abs().max().item(), "ep2": (ep2 - ref).abs().max().item(),
                  "params_ep1": params_ep1, "params_ep2": params_ep2}
        (out_dir / "result.json").write_text(json.dumps(result))
    shutdown_runtime()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
