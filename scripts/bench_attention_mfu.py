"""Train-step throughput and MFU of a ~1B Llama-shape GPTModel with attention=sdpa vs attention=local.

    .venv/bin/python scripts/bench_attention_mfu.py [--steps 10 --micro-batch 1 --peak-flops 989e12]
    .venv/bin/python scripts/bench_attention_mfu.py --device cpu --tiny     # smoke test of the logic

One GPU, bf16, seq 4096, no Transformer Engine in the layer spec (both rows use Megatron's local spec;
`sdpa` swaps its core attention for factory.model.attention.SdpaAttention). A step is forward, backward
and (unless --no-optimizer) a torch AdamW step. Without CUDA it prints "skipped: no CUDA device", exit 0.

FLOPs per token (PaLM / Megatron convention, no discount for the causal mask):
    6 * N_matmul + 12 * L * s * (heads * head_dim)
N_matmul = non-embedding parameters (active ones for MoE; norm weights included) + the output layer
(padded_vocab * hidden); the input embedding is a lookup and is not counted. The attention term is the
QK^T and PV matmuls, 2 * 2 * s * heads * head_dim FLOPs per token per layer forward, times 3 for fwd+bwd.
TFLOP/s = FLOPs per token * tokens/s; MFU = TFLOP/s / peak (--peak-flops, default H100 SXM dense bf16).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch

LLAMA_1B = dict(num_layers=22, hidden_size=2048, ffn_hidden_size=5632, num_attention_heads=16,
                num_query_groups=4, seq_length=4096, vocab_size=32000, rotary_base=10000.0)
TINY = dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
            num_query_groups=2, seq_length=128, vocab_size=256)


def flops_per_token(m, counts, padded_vocab: int) -> float:
    """The formula in the module docstring."""
    n_matmul = counts.active - counts.embedding + padded_vocab * m.hidden_size
    return 6 * n_matmul + 12 * m.num_layers * m.seq_length * m.num_attention_heads * m.head_dim


def time_steps(model, rt, m, args) -> tuple[float, float]:
    """Mean seconds per train step after warm-up, and the last loss."""
    opt = None if args.no_optimizer else torch.optim.AdamW(model.parameters(), lr=1e-5)
    mb, seq = args.micro_batch, m.seq_length
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, m.vocab_size, (mb, seq), generator=gen).to(rt.device)
    pos = torch.arange(seq, device=rt.device).expand(mb, seq)
    labels = torch.roll(tokens, -1, dims=1)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            rt.synchronize()
            t0 = time.perf_counter()
        loss = model(tokens, pos, None, labels=labels).float().mean()
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
    rt.synchronize()
    return (time.perf_counter() - t0) / args.steps, loss.item()


def reseed(seed: int) -> None:
    from megatron.core import tensor_parallel

    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def bench(backend: str, rt, m, args, counts) -> dict:
    """One row of the table; an OOM on the GPU becomes a row that says so."""
    from factory.model.build import build_gpt_model

    m = m.model_copy(update={"attention": backend})
    if rt.is_cuda:
        torch.cuda.reset_peak_memory_stats(rt.device)
    model = None
    try:
        reseed(args.seed)  # the same initial weights for every backend
        model = build_gpt_model(m, rt)
        step_s, loss = time_steps(model, rt, m, args)
    except torch.cuda.OutOfMemoryError:
        return {"backend": backend, "oom": True}
    finally:
        del model
        gc.collect()
        if rt.is_cuda:
            torch.cuda.empty_cache()
    tok_s = args.micro_batch * m.seq_length / step_s
    tflops = flops_per_token(m, counts, m.padded_vocab_size()) * tok_s / 1e12
    mem = torch.cuda.max_memory_allocated(rt.device) / 2**30 if rt.is_cuda else None
    return {"backend": backend, "step_s": step_s, "tok_s": tok_s, "tflops": tflops, "loss": loss,
            "mfu": tflops * 1e12 / args.peak_flops if rt.is_cuda else None, "mem": mem}


def print_table(rows: list[dict]) -> None:
    print("| attention | step s | tokens/s | TFLOP/s | MFU | peak mem GiB | loss |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("oom"):
            print(f"| {r['backend']} | OOM | | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (CPU)"
        mem = f"{r['mem']:.1f}" if r["mem"] is not None else "n/a"
        print(f"| {r['backend']} | {r['step_s']:.4f} | {r['tok_s']:,.0f} | {r['tflops']:.4g} | {mfu} "
              f"| {mem} | {r['loss']:.4f} |")
    ok = {r["backend"]: r for r in rows if not r.get("oom")}
    if {"sdpa", "local"} <= ok.keys():
        print(f"speedup sdpa vs local: {ok['local']['step_s'] / ok['sdpa']['step_s']:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="2-layer hidden-64 model, seq 128 (smoke test)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=None, help="override the sequence length")
    p.add_argument("--backends", default="sdpa,local", help="comma-separated: sdpa, local")
    p.add_argument("--peak-flops", type=float, default=989e12, help="dense bf16 peak FLOP/s of the GPU")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-optimizer", action="store_true", help="time forward+backward only")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0

    from factory.logs import setup_logging
    from factory.model.build import parameter_counts
    from factory.model.config import ModelConfig
    from factory.runtime.config import ParallelConfig, RuntimeConfig
    from factory.runtime.runtime import runtime_session

    setup_logging("WARNING")
    shape = dict(TINY if args.tiny else LLAMA_1B)
    if args.seq:
        shape["seq_length"] = args.seq
    m = ModelConfig(**shape)
    precision = "bf16" if args.device == "cuda" else "fp32"
    counts = parameter_counts(m)
    with runtime_session(RuntimeConfig(device=args.device, precision=precision), ParallelConfig()) as rt:
        if rt.use_transformer_engine:
            print("note: Transformer Engine is installed; layer_spec would pick TE, this script "
                  "measures the non-TE specs only", file=sys.stderr)
        print(f"device={rt.device} ({torch.cuda.get_device_name(rt.device) if rt.is_cuda else 'cpu'}) "
              f"dtype={rt.dtype} torch={torch.__version__}")
        print(f"model: {m.num_layers} layers, hidden {m.hidden_size}, ffn {m.ffn_hidden_size}, "
              f"{m.num_attention_heads} heads / {m.query_groups} groups, vocab {m.vocab_size}; "
              f"{counts.describe()}")
        print(f"micro_batch={args.micro_batch} seq={m.seq_length} steps={args.steps} "
              f"(+{args.warmup} warm-up) optimizer={'none' if args.no_optimizer else 'AdamW'} "
              f"flops/token={flops_per_token(m, counts, m.padded_vocab_size()):.4g}")
        rows = [bench(b.strip(), rt, m, args, counts) for b in args.backends.split(",")]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
