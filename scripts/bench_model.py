"""Forward+backward throughput of a config's GPTModel on this machine's runtime (prints figures).

    .venv/bin/python scripts/bench_model.py configs/demo-cpu.yaml [--steps 10 --micro-batch 4] [key=value ...]

FLOPs per token use the standard 6 x active-parameters estimate plus attention (12 x layers x seq x hidden).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=4)
    args = parser.parse_intermixed_args()

    from factory.config import load_config
    from factory.logs import setup_logging
    from factory.model.build import build_gpt_model, parameter_counts
    from factory.runtime.runtime import runtime_session

    setup_logging("WARNING")
    cfg = load_config(args.config, args.overrides)
    m = cfg.model
    with runtime_session(cfg.runtime, cfg.parallel) as rt:
        model = build_gpt_model(m, rt)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        seq, mb = m.seq_length, args.micro_batch
        tokens = torch.randint(0, m.vocab_size, (mb, seq), device=rt.device)
        pos = torch.arange(seq, device=rt.device).expand(mb, seq)
        labels = torch.roll(tokens, -1, dims=1)
        times = []
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            loss = model(tokens, pos, None, labels=labels).float().mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            rt.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        step_s = sum(times) / len(times)
        counts = parameter_counts(m, cfg.parallel.tensor)
        flops_per_token = 6 * counts.active + 12 * m.num_layers * seq * m.hidden_size
        tok_s = mb * seq / step_s
        print(f"device={rt.device} dtype={rt.dtype} params={counts.describe()}")
        print(f"micro_batch={mb} seq={seq} step_s={step_s:.4f} tokens_per_s={tok_s:,.0f} "
              f"tflops={flops_per_token * tok_s / 1e12:.3f} final_loss={loss.item():.4f}")


if __name__ == "__main__":
    main()
