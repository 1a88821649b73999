"""torchrun worker: a model saved at TP=1/EP=1 and reloaded at TP=2 or EP=2 gives the same logits.

Usage: torchrun --standalone --nproc-per-node 2 tests/slow/parallel_worker.py OUT_DIR
Both modes (tp: dense, ep: MoE) in one process group, so they cost one start-up; for each MODE, rank 0 writes
OUT_DIR/MODE/result.json with the max |logit difference|.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from factory.process_exit import exit_process


def _logits(model, cfg) -> torch.Tensor:
    from megatron.core import tensor_parallel

    gen = torch.Generator().manual_seed(0)
    seq = cfg.model.seq_length
    tokens = torch.randint(0, cfg.model.vocab_size, (2, seq), generator=gen)
    pos = torch.arange(seq).expand(2, seq)
    with torch.no_grad():
        logits = model.eval()(tokens, pos, None)
    # The output layer is vocab-parallel: gather the TP shards, drop the padding.
    full = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
    return full[..., : cfg.model.vocab_size]


def compare(mode: str, out_dir: Path) -> None:
    from megatron.core import dist_checkpointing, parallel_state

    from factory.model.build import build_gpt_model
    from factory.runtime.runtime import init_runtime, release_parallel_state
    from factory.train import checkpoint_writer
    from tests.conftest import TINY_DENSE, TINY_MOE, make_config

    release_parallel_state()  # the layout of the mode before
    base = TINY_DENSE if mode == "tp" else TINY_MOE
    sharded = {"tensor": 2} if mode == "tp" else {"expert": 2}
    ref_cfg = make_config(base)
    rt = init_runtime(ref_cfg.runtime, ref_cfg.parallel)
    ref_model = build_gpt_model(ref_cfg.model, rt)
    ref = _logits(ref_model, ref_cfg)
    ckpt = out_dir / "ckpt"
    if rt.rank == 0:
        ckpt.mkdir(parents=True)
    torch.distributed.barrier()
    checkpoint_writer.prepare()  # as the factory's saves: no manager process (a fresh interpreter) per rank
    dist_checkpointing.save(ref_model.sharded_state_dict(), str(ckpt))

    release_parallel_state()
    cfg = make_config(base, parallel=sharded)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=cfg.parallel.tensor,
        expert_model_parallel_size=cfg.parallel.expert,
        expert_tensor_parallel_size=cfg.parallel.expert_tensor_size)
    rt = init_runtime(cfg.runtime, cfg.parallel)
    model = build_gpt_model(cfg.model, rt)
    local = sum(p.numel() for p in model.parameters())
    model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), str(ckpt)))
    diff = (_logits(model, cfg) - ref).abs().max().item()
    if rt.rank == 0:
        result = {"max_abs_logit_diff": diff, "local_params": local,
                  "ref_params": sum(p.numel() for p in ref_model.parameters())}
        (out_dir / "result.json").write_text(json.dumps(result))


def main(out: Path) -> None:
    from factory.runtime.runtime import shutdown_runtime

    for mode in ("tp", "ep"):
        compare(mode, out / mode)
    shutdown_runtime()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    exit_process(0)  # the interpreter's teardown of torch and Megatron costs ~1 CPU-s
