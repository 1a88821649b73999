"""Does upcycling beat continuing the dense model at equal tokens? A small, honest experiment.

    .venv/bin/python scripts/science_upcycle.py [--config configs/demo-cpu.yaml] [--seeds 3]

1. Pretrain the demo's dense model once (its `pretrain` section) on the demo data.
2. For each seed, continue for the same number of tokens: (a) dense, (b) upcycled `copy` (4 experts,
   top-2), `granular` (8 half-width experts, top-4: same active FFN width), `drop` (copy + Drop-Upcycling
   with half the neurons re-initialized), each through the `cpt` stage with the same schedule.
3. Plot held-out (validation split) loss against tokens, mean and min-max over seeds, to a PNG, and print
   the final held-out losses, each mode's difference from the dense continuation of the same seed, and each
   MoE mode's final expert-load imbalance (max over layers of max/mean tokens per expert).
Needs the demo's tokenizer and pack outputs (run the demo first). The continuation reads the pack stage's blend
alone (`cpt.phases=[]`: the demo's cpt phases name its synth stage's blend, which these run folders lack).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "dense": None,
    "copy": ["upcycle.mode=copy", "upcycle.moe={num_experts: 4, router_topk: 2, token_dispatcher: allgather}"],
    "granular": ["upcycle.mode=granular", "upcycle.granularity=2",
                 "upcycle.moe={num_experts: 8, router_topk: 4, token_dispatcher: allgather}"],
    "drop": ["upcycle.mode=drop", "upcycle.drop_fraction=0.5",
             "upcycle.moe={num_experts: 4, router_topk: 2, token_dispatcher: allgather}"],
}


def stage(name: str, config: str, overrides: list[str]) -> dict:
    from factory.config import load_config
    from factory.runner import run_stage
    from factory.registry import STAGES

    return run_stage(STAGES[name], load_config(config, overrides)).to_dict()


def curve(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "cpt" / "metrics.jsonl").read_text().splitlines()
    return [(r["tokens"], r["valid_loss"]) for r in map(json.loads, lines) if "valid_loss" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo-cpu.yaml")
    parser.add_argument("--data", type=Path, default=Path("runs/demo-cpu"), help="folder with pack/ and tokenizer/")
    parser.add_argument("--out", type=Path, default=Path("runs/science-upcycle"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpt-iters", type=int, default=40)
    parser.add_argument("--pretrain-iters", type=int, default=None, help="default: the config's pretrain.train_iters")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    args = parser.parse_args()
    variants = {v: VARIANTS[v] for v in args.variants.split(",")}
    from factory.logs import setup_logging

    setup_logging("WARNING")
    data = [f"pretrain.blend_file={args.data}/pack/blend.json", f"pretrain.tokenizer_dir={args.data}/tokenizer",
            f"cpt.blend_file={args.data}/pack/blend.json", f"cpt.tokenizer_dir={args.data}/tokenizer"]
    base = args.out / "base"
    if not (base / "pretrain" / "manifest.json").exists():
        iters = [] if args.pretrain_iters is None else [f"pretrain.train_iters={args.pretrain_iters}",
                                                        f"pretrain.checkpoint.save_interval={args.pretrain_iters}"]
        stage("pretrain", args.config, [f"run.dir={base}", *data, *iters])
    every = max(5, args.cpt_iters // 10)
    cpt = [f"cpt.train_iters={args.cpt_iters}", f"cpt.eval_interval={every}", "cpt.eval_iters=4",
           f"cpt.log_interval={every}", "cpt.checkpoint.save_interval=null", "cpt.phases=[]",
           "cpt.schedule={style: cosine, warmup_iters: 0}", *data]
    curves: dict[str, list[list[tuple[int, float]]]] = {v: [] for v in variants}
    imbalance: dict[str, list[float]] = {v: [] for v in variants}
    for seed in range(args.seeds):
        for variant, upcycle in variants.items():
            run_dir = args.out / f"{variant}-seed{seed}"
            init = base / "pretrain" / "checkpoints"
            if upcycle is not None and not (run_dir / "upcycle" / "manifest.json").exists():
                stage("upcycle", args.config, [f"run.dir={run_dir}", f"upcycle.source={init}",
                                               f"upcycle.seed={seed}", *upcycle])
            if upcycle is not None:
                init = run_dir / "upcycle" / "checkpoints"
            if not (run_dir / "cpt" / "manifest.json").exists():
                stage("cpt", args.config, [f"run.dir={run_dir}", f"cpt.init_from={init}", f"runtime.seed={seed}",
                                           f"cpt.seed={seed}", *cpt])
            curves[variant].append(curve(run_dir))
            imbalance[variant].append(final_imbalance(run_dir))
            print(f"{variant} seed {seed}: final held-out loss {curves[variant][-1][-1][1]:.4f}", flush=True)
    plot(curves, args.out / "upcycle_vs_dense.png")
    report(curves, imbalance)
    print(f"plot: {args.out / 'upcycle_vs_dense.png'}")


def final_imbalance(run_dir: Path) -> float | None:
    """The last logged max over layers of max/mean tokens per expert (None for a dense run)."""
    lines = (run_dir / "cpt" / "metrics.jsonl").read_text().splitlines()
    values = [r["moe_max_imbalance"] for r in map(json.loads, lines) if "moe_max_imbalance" in r]
    return values[-1] if values else None


def report(curves: dict, imbalance: dict) -> None:
    """Final held-out loss per mode, its paired difference from dense per seed, and the final expert imbalance."""
    dense = [r[-1][1] for r in curves["dense"]] if "dense" in curves else None
    print("\nvariant | final held-out loss, mean [min, max] | minus dense, per seed | final moe_max_imbalance, per seed")
    for variant, runs in curves.items():
        finals = [r[-1][1] for r in runs]
        paired = "-" if dense is None or variant == "dense" else \
            ", ".join(f"{f - d:+.4f}" for f, d in zip(finals, dense))
        balance = ", ".join(f"{x:.2f}" for x in imbalance[variant] if x is not None) or "-"
        print(f"{variant} | {statistics.mean(finals):.4f} [{min(finals):.4f}, {max(finals):.4f}] | {paired} | {balance}")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, runs in curves.items():
        tokens = [t for t, _ in runs[0]]
        by_step = list(zip(*[[loss for _, loss in r] for r in runs]))
        ax.plot(tokens, [statistics.mean(v) for v in by_step], label=variant)
        ax.fill_between(tokens, [min(v) for v in by_step], [max(v) for v in by_step], alpha=0.2)
    ax.set_xlabel("tokens seen (pretrain + continuation)")
    ax.set_ylabel("held-out loss")
    ax.set_title("dense continuation vs upcycled MoE at equal tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from factory.errors import FactoryError
    from factory.errors import report as report_error

    try:
        main()
    except FactoryError as e:  # one line per problem, as the factory's commands print it
        sys.exit(report_error(e))
