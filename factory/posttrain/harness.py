"""JGLUE through lm-evaluation-harness, in-process: the model backend (HF, or vLLM on GPUs), the tasks built
from the local eval data, and the scores with their standard errors, example counts and chance levels."""

from __future__ import annotations

import importlib.util
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager

from factory.errors import ConfigError
from factory.posttrain.benchmark_config import HarnessConfig
from factory.posttrain.jglue import DESCRIPTION, TASKS, majority_share

log = logging.getLogger(__name__)
BOOTSTRAP_ITERS = 1000
"""Resamples for the standard error of the correlations (lm-eval has a closed form only for means)."""


@dataclass
class TaskScore:
    """One metric of one task, as the manifest and the reports show it."""

    task: str
    metric: str
    value: float | None
    """None when the metric is undefined (a correlation over constant predictions)."""
    stderr: float | None
    examples: int
    num_fewshot: int
    chance: float | None
    majority: float | None = None
    """Accuracy of always answering the most frequent label of the examples scored (classification)."""


class LocalTask(ConfigurableTask):
    """An lm-eval task whose documents were read from the eval data folder (lm-eval never downloads)."""

    def __init__(self, docs: list[dict[str, Any]], config: dict[str, Any]):
        self._docs = docs
        super().__init__(config=config)

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs) -> None:
        self.dataset = datasets.DatasetDict({"validation": datasets.Dataset.from_list(self._docs)})


def build_task(name: str, data_dir: Path, max_gen_tokens: int) -> LocalTask:
    """The task `name` on its validation split; few-shot examples come from the same split, never the
    example being scored (the leaderboard draws them from train, which the eval data folder holds but the
    tasks do not read yet)."""
    spec = TASKS[name]
    config = {"task": name, "test_split": "validation", "fewshot_split": "validation", "description": DESCRIPTION,
              "target_delimiter": "\n", "num_fewshot": spec.num_fewshot, **spec.lm_eval}
    if config["output_type"] == "generate_until":
        config["generation_kwargs"] = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": max_gen_tokens}
    return LocalTask(spec.read(data_dir / spec.file), config)


def choose_backend(harness: HarnessConfig, device_type: str) -> str:
    """hf or vllm: `auto` takes vLLM only on CUDA with vllm installed."""
    if harness.backend != "auto":
        return harness.backend
    return "vllm" if device_type == "cuda" and importlib.util.find_spec("vllm") else "hf"


def make_lm(backend: str, folder: Path, harness: HarnessConfig, model=None, tokenizer=None, dtype: str = "auto") -> LM:
    """lm-eval's own model class for the backend: HFLM around the loaded model, or VLLM on the folder."""
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("eval.harness.backend=vllm: vllm is not installed (pip install vllm on the GPU nodes)")
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(folder), dtype=dtype, batch_size="auto")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=harness.batch_size)


class _TruncationCounter(logging.Filter):
    """Counts lm-eval's per-request 'truncating from the left' warnings and keeps them out of the log."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "exceeds model's maximum length" in record.getMessage():
            self.count += 1
            return False
        return True


def evaluate(lm: LM, harness: HarnessConfig, data_dir: Path, seed: int) -> list[TaskScore]:
    """Run the configured tasks through `simple_evaluate`; one TaskScore per task and metric."""
    tasks = [build_task(name, data_dir, harness.max_gen_tokens) for name in harness.tasks]
    counter = _TruncationCounter()
    hf_log = logging.getLogger("lm_eval.models.huggingface")
    hf_log.addFilter(counter)
    try:
        results = simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=harness.num_fewshot, limit=harness.limit,
            task_manager=TaskManager(include_defaults=False), bootstrap_iters=BOOTSTRAP_ITERS, log_samples=True,
            apply_chat_template=harness.chat_template, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed)
    finally:
        hf_log.removeFilter(counter)
    if counter.count:
        log.warning("eval: %d harness requests were longer than the model's context and lost their start "
                    "(fewer shots, eval.harness.num_fewshot, keep prompts whole)", counter.count)
    return [score for name in harness.tasks for score in _task_scores(name, results)]


def _task_scores(name: str, results: dict[str, Any]) -> list[TaskScore]:
    spec, row, samples = TASKS[name], results["results"][name], results["samples"][name]
    examples, shots = int(results["n-samples"][name]["effective"]), int(results["n-shot"][name])
    majority = majority_share([s["doc"]["label"] for s in samples]) if spec.classes else None
    out = []
    for metric in spec.metrics:
        key = next(k for k in row if k.split(",")[0] == metric)
        value = _number(row[key])
        stderr = _number(row.get(key.replace(",", "_stderr,", 1)))
        if stderr is None and value is not None and metric in ("pearson", "spearman"):
            stderr = bootstrap_stderr(spec.lm_eval["metric_list"][spec.metrics.index(metric)]["aggregation"],
                                      [tuple(s[metric]) for s in samples])
        out.append(TaskScore(name, metric, value, stderr, examples, shots, spec.chance.get(metric), majority))
    return out


def bootstrap_stderr(statistic, items: list, iters: int = BOOTSTRAP_ITERS, seed: int = 0) -> float | None:
    """Standard deviation of `statistic` over resamples of `items` with replacement (undefined ones skipped)."""
    rng = random.Random(seed)
    values = [v for v in (statistic(rng.choices(items, k=len(items))) for _ in range(iters)) if not math.isnan(v)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    return None
