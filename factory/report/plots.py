"""The report's figures (matplotlib, headless): one function per PNG, data in, file out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factory.posttrain.benchmark_report import score_label

Curve = list[dict[str, Any]]


def _pyplot():
    """pyplot on the headless backend, imported with the first figure: the commands that import the report and draw
    nothing (`python -m factory.launch status`, the pipeline's dry run) start ~0.4 CPU-s sooner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _xy(records: Curve, x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in records if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def training_curves(curves: dict[str, Curve], key: str, ylabel: str, path: Path) -> Path:
    """`key` (and validation loss for `loss`) against tokens seen, one colour per stage on one axis."""
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for stage, records in curves.items():
        line, = ax.plot(*_xy(records, "tokens", key), marker=".", label=f"{stage} ({key})")
        if key == "loss":
            ax.plot(*_xy(records, "tokens", "valid_loss"), "s--", color=line.get_color(), label=f"{stage} (valid)")
    starts = [records[0]["tokens"] for records in list(curves.values())[1:] if records and "tokens" in records[0]]
    for x in starts:
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    for stage, records in curves.items():  # blend phase switches inside a stage
        for before, after in zip(records, records[1:]):
            if before.get("phase") != after.get("phase") and after.get("phase") and "tokens" in before:
                ax.axvline(before["tokens"], color="tab:purple", linestyle="--", linewidth=1)
                ax.annotate(after["phase"], (before["tokens"], 1), xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=7, color="tab:purple")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def expert_load(records: Curve, path: Path) -> Path:
    """Per layer, the share of routed tokens each expert received at each logged step."""
    layers = sorted({k for r in records for k in r.get("moe_tokens_per_expert", {})}, key=lambda s: (len(s), s))
    steps = [r for r in records if r.get("moe_tokens_per_expert")]
    fig, axes = _pyplot().subplots(1, len(layers), figsize=(3 * len(layers) + 1, 3.2), squeeze=False,
                             layout="constrained")
    ticks = range(0, len(steps), max(1, len(steps) // 6))
    for ax, layer in zip(axes[0], layers):
        counts = np.array([r["moe_tokens_per_expert"][layer] for r in steps], dtype=float).T
        share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
        im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(layer)
        ax.set_xlabel("iteration")
        ax.set_xticks(list(ticks), [str(steps[i]["iteration"]) for i in ticks])
        ax.set_yticks(range(counts.shape[0]))
    axes[0][0].set_ylabel("expert")
    fig.colorbar(im, ax=axes[0].tolist(), label="share of routed tokens")
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def funnel(counts: dict[str, int], path: Path) -> Path:
    """Records in, kept, and rejected by reason, as horizontal bars."""
    fig, ax = _pyplot().subplots(figsize=(7, 0.4 * len(counts) + 1.2))
    labels = list(counts)[::-1]
    bars = ax.barh(labels, [counts[k] for k in labels],
                   color=["tab:red" if k.startswith("rejected") else "tab:blue" for k in labels])
    ax.bar_label(bars, fmt="{:,.0f}", padding=3)
    ax.set_xlabel("records")
    ax.margins(x=0.15)
    return _save(fig, path)


def verification(rows: list[tuple[str, float, float | None]], path: Path) -> Path:
    """Max |logit difference| per transform (log scale) against its tolerance."""
    fig, ax = _pyplot().subplots(figsize=(6, 3))
    labels = [r[0] for r in rows]
    ax.bar(labels, [max(r[1], 1e-12) for r in rows], color="tab:green", label="max |dlogits|")
    for i, (_, _, tol) in enumerate(rows):
        if tol is not None:
            ax.hlines(tol, i - 0.4, i + 0.4, colors="tab:red", linestyles="--", label="tolerance" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_ylim(bottom=min(max(r[1], 1e-12) for r in rows) / 10)
    ax.set_ylabel("max |logit difference|")
    ax.legend()
    return _save(fig, path)


def posttrain(curves: dict[str, Curve], path: Path) -> Path:
    """Loss per step for each post-training stage; DPO reward margins on a second axis."""
    fig, axes = _pyplot().subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for ax, (stage, records) in zip(axes[0], curves.items()):
        ax.plot(*_xy(records, "step", "loss"), marker=".", label="loss")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        margin = _xy(records, "step", "rewards/margins")
        if margin[0]:
            twin = ax.twinx()
            twin.plot(*margin, color="tab:orange", marker=".", label="reward margin")
            twin.set_ylabel("reward margin (chosen - rejected)")
            twin.legend(loc="upper right")
        ax.legend(loc="upper left")
    return _save(fig, path)


def scores_vs_tokens(rows: list[dict[str, Any]], path: Path) -> Path:
    """Benchmark scores of checkpoints against tokens seen: one panel per task metric, one line per series
    (dense and MoE on the same axis), error bars of one standard error, chance dashed, majority class dotted."""
    metrics = list(dict.fromkeys(score_label(s) for r in rows for s in r["scores"]))
    fig, axes = _pyplot().subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        chance = majority = None
        for label in dict.fromkeys(r["label"] for r in rows):
            points = [(r["tokens"], s) for r in rows if r["label"] == label for s in r["scores"]
                      if score_label(s) == metric and s["value"] is not None]
            if points:
                ax.errorbar([t for t, _ in points], [s["value"] for _, s in points],
                            yerr=[s["stderr"] or 0 for _, s in points], marker="o", capsize=3, label=label)
                chance, majority = points[0][1]["chance"], points[0][1].get("majority")
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        if majority is not None:
            ax.axhline(majority, color="grey", linestyle=":", linewidth=1, label="majority class")
        ax.set_title(metric)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(metric.split(" ")[1])
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)
