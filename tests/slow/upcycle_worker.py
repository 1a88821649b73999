"""torchrun worker: upcycled checkpoints loaded at EP=1 and at EP=2 give the dense model's logits.

Usage: torchrun --standalone --nproc-per-node 2 tests/slow/upcycle_worker.py DENSE_CKPT RUN_DIR...
For each RUN_DIR (an upcycle stage's run folder), rank 0 writes RUN_DIR/result.json with the max |logit
difference| of RUN_DIR/upcycle/checkpoints to the dense model at EP=1 and EP=2. One process group for all of
them (Megatron's parallel state is rebuilt per load), so they cost one start-up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from factory.process_exit import exit_process


def _logits_of(path: Path, parallel: dict):
    from factory.model.build import build_gpt_model
    from factory.runtime.config import ParallelConfig, RuntimeConfig
    from factory.runtime.runtime import init_runtime, release_parallel_state
    from factory.train import checkpoint as ckpt
    from factory.upcycle.weights import logits, probe_tokens

    release_parallel_state()
    rt = init_runtime(RuntimeConfig(device="cpu", precision="fp32"), ParallelConfig(**parallel))
    info = ckpt.read_info(path)
    model = build_gpt_model(info.model, rt)
    ckpt.load(path, model, rt, restore_rng=False)
    tokens = probe_tokens(info.model.vocab_size, 2, info.model.seq_length, seed=0)
    local = sum(p.numel() for p in model.parameters())
    return logits(model, tokens, info.model.vocab_size), local, rt


def main(dense: Path, run_dirs: list[Path]) -> None:
    from factory.runtime.runtime import shutdown_runtime

    ref, _, _ = _logits_of(dense, {})
    for run_dir in run_dirs:
        moe = run_dir / "upcycle" / "checkpoints"
        ep1, params_ep1, _ = _logits_of(moe, {})
        ep2, params_ep2, rt = _logits_of(moe, {"expert": 2})
        if rt.rank == 0:
            result = {"ep1": (ep1 - ref).abs().max().item(), "ep2": (ep2 - ref).abs().max().item(),
                      "params_ep1": params_ep1, "params_ep2": params_ep2}
            (run_dir / "result.json").write_text(json.dumps(result))
    shutdown_runtime()


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]])
    exit_process(0)  # the interpreter's teardown of torch and Megatron costs ~1 CPU-s
