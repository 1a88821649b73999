"""Megatron checkpoints in the eval stage: the temporary verified HF export, and the series of iterations
scored with the harness tasks (the points of the report's score-against-tokens plot, dense and MoE)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from factory import outputs
from factory.config_base import CoreConfig
from factory.errors import ConfigError
from factory.posttrain.benchmark_config import CheckpointSeries

log = logging.getLogger(__name__)


@contextlib.contextmanager
def hf_folder(cfg: CoreConfig, model: Path) -> Iterator[Path]:
    """The model as an HF folder: itself, or a temporary export of a Megatron checkpoint (verified by logits)."""
    from factory.convert.export import as_hf_folder  # torch: only a run pays for it

    with as_hf_folder(model, runtime_cfg=cfg.runtime,
                      tokenizer_dir=cfg.eval.tokenizer_dir or outputs.tokenizer(cfg).dir,
                      run_dir=cfg.run.dir, name=cfg.run.name) as folder:
        yield folder


@dataclass(frozen=True)
class SweepPoint:
    """One checkpoint iteration to score."""

    series: int
    """Index into eval.checkpoints."""
    iteration: int
    folder: Path


def sweep_points(series: list[CheckpointSeries]) -> list[SweepPoint]:
    """Every (series, iteration) to score; one ConfigError listing each missing folder or iteration."""
    from factory.train.checkpoint import saved_iterations  # torch: not at the registry's start-up

    absent = [f"eval.checkpoints[{i}].path={s.path}" for i, s in enumerate(series) if not s.path.is_dir()]
    points, problems = [], [f"no such checkpoint folder: {', '.join(absent)}"] if absent else []
    for i, s in enumerate(series):
        key = f"eval.checkpoints[{i}]"
        if not s.path.is_dir():
            continue
        present = saved_iterations(s.path)
        wanted = present if s.iterations == "all" else list(s.iterations)
        missing = [it for it in wanted if it not in present]
        if missing or not wanted:
            problems.append(f"{key}.iterations: {missing or 'all'} not found in {s.path} "
                            f"(present: {', '.join(map(str, present)) or 'none'})")
        points += [SweepPoint(i, it, s.path / f"iter_{it:07d}") for it in wanted if it in present]
    if problems:
        raise ConfigError(problems)
    return points


def series_label(series: CheckpointSeries, moe: bool) -> str:
    """The configured label, or the stage folder and the model kind, e.g. `cpt (MoE)`."""
    return series.label or f"{series.path.parent.name} ({'MoE' if moe else 'dense'})"


def score_checkpoints(cfg: CoreConfig, score: Callable[[Path], list[Any]]) -> list[dict[str, Any]]:
    """Export each sweep point to a temporary HF folder and `score` it; one row per checkpoint iteration."""
    from factory.train.checkpoint import read_info

    rows = []
    for point in sweep_points(cfg.eval.checkpoints):
        series = cfg.eval.checkpoints[point.series]
        info = read_info(point.folder)
        tokens = info.meta.lineage_tokens
        log.info("eval: scoring %s at iteration %d (%s tokens seen)", series.path, point.iteration, f"{tokens:,}")
        with hf_folder(cfg, point.folder) as folder:
            scores = score(folder)
        rows.append({"label": series_label(series, info.model.moe is not None), "checkpoint": str(point.folder),
                     "iteration": point.iteration, "tokens": tokens, "moe": info.model.moe is not None,
                     "scores": [dataclasses.asdict(s) for s in scores]})
    return rows
