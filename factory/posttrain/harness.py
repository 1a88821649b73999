"""JGLUE through lm-evaluation-harness, in-process: the model backend (HF, or vLLM on GPUs), the tasks of both
scoring protocols run on the local eval data (harness_tasks.py), and the scores with their standard errors,
example counts, chance levels, the split the shots came from and how many prompts were cut to the context."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from factory.errors import ConfigError
from factory.posttrain import benchmark_report
from factory.posttrain.benchmark_config import LEADERBOARD, HarnessConfig
from factory.posttrain.harness_tasks import PreparedTask, prepare
from factory.posttrain.jglue import TASKS, majority_share

if TYPE_CHECKING:  # for annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
BOOTSTRAP_ITERS = 1000
"""Resamples for the standard error of the correlations (lm-eval has a closed form only for means)."""
CUT_WARNING_SHARE = 0.01
"""Above this share of a task's prompts cut to the context, the stage warns."""


@dataclass
class TaskScore:
    """One metric of one task under one protocol, as the manifest and the reports show it."""

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
    protocol: str = LEADERBOARD
    """lm-evaluation-harness (its japanese_leaderboard task definitions) or llm-jp-eval."""
    fewshot_split: str | None = None
    prompts: int = 0
    """Requests sent to the model (one per answer choice for multiple choice)."""
    prompts_cut: int = 0
    """Requests longer than the context, whose start (with the instruction) the model never saw."""
    context: int | None = None
    """The model's context in tokens, the length prompts were cut to."""
    definition: str = ""
    """What defined the prompt (the upstream task YAML, or the protocol's version)."""

    def truncation(self) -> str:
        """`JNLI: 600 of 600 prompts cut to 128 tokens`."""
        return benchmark_report.truncation(dataclasses.asdict(self))


def choose_backend(harness: HarnessConfig, device_type: str) -> str:
    """hf or vllm: `auto` takes vLLM only on CUDA with vllm installed."""
    if harness.backend != "auto":
        return harness.backend
    return "vllm" if device_type == "cuda" and importlib.util.find_spec("vllm") else "hf"


def make_lm(backend: str, folder: Path, harness: HarnessConfig, model: PreTrainedModel | None = None,
            tokenizer: PreTrainedTokenizerBase | None = None, dtype: str = "auto") -> LM:
    """lm-eval's own model class for the backend: HFLM around the loaded model, or VLLM on the folder."""
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("eval.harness.backend=vllm: vllm is not installed (pip install vllm on the GPU nodes)")
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(folder), dtype=dtype, batch_size="auto")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=harness.batch_size)


class _DropTruncationWarnings(logging.Filter):
    """lm-eval warns once per request or batch that it cut; the stage counts them per task instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "exceeds model's maximum length" not in message and "Left truncation applied" not in message


@contextlib.contextmanager
def _quiet_truncation():
    hf_log, quiet = logging.getLogger("lm_eval.models.huggingface"), _DropTruncationWarnings()
    hf_log.addFilter(quiet)
    try:
        yield
    finally:
        hf_log.removeFilter(quiet)


def evaluate(lm: LM, harness: HarnessConfig, data_dir: Path, seed: int) -> list[TaskScore]:
    """Run every configured task of every protocol through one `simple_evaluate`; one TaskScore per task,
    protocol and metric, with the truncation counted per task (a warning above CUT_WARNING_SHARE)."""
    with tempfile.TemporaryDirectory(prefix="factory-jglue-") as work, _quiet_truncation():
        prepared = prepare(harness, data_dir, Path(work))
        results = simple_evaluate(
            model=lm, tasks=[p.task for p in prepared], limit=harness.limit,
            task_manager=TaskManager(include_defaults=False), bootstrap_iters=BOOTSTRAP_ITERS, log_samples=True,
            apply_chat_template=harness.chat_template, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed)
    scores = [score for p in prepared for score in _task_scores(p, results, lm)]
    for s in {(s.protocol, s.task): s for s in scores}.values():
        if s.prompts and s.prompts_cut / s.prompts > CUT_WARNING_SHARE:
            log.warning("eval: %s (%s); the model never saw their start, instruction included (fewer shots, "
                        "eval.harness.num_fewshot, or a longer context keep them whole)", s.truncation(), s.protocol)
    return scores


def _task_scores(p: PreparedTask, results: dict[str, Any], lm: LM) -> list[TaskScore]:
    task_name = p.task.task_name
    row, samples = results["results"][task_name], _one_per_doc(results["samples"][task_name])
    examples, shots = int(results["n-samples"][task_name]["effective"]), int(results["n-shot"][task_name])
    spec = TASKS[p.name]
    metrics = spec.metrics if p.protocol == LEADERBOARD else ("exact_match",)
    classes = "label" in samples[0]["doc"] and spec.classes
    majority = majority_share([s["doc"]["label"] for s in samples]) if classes else None
    prompts, cut = _cut_prompts(lm, p.task.OUTPUT_TYPE, [a for s in samples for a in s["arguments"]])
    out = []
    for metric in metrics:
        key = next(k for k in row if k.split(",")[0] == metric)
        value = _number(row[key])
        stderr = _number(row.get(key.replace(",", "_stderr,", 1)))
        if stderr is None and value is not None and metric in ("pearson", "spearman"):
            aggregation = next(m["aggregation"] for m in spec.own["metric_list"] if m["metric"] == metric)
            stderr = bootstrap_stderr(aggregation, [tuple(s[metric]) for s in samples])
        chance = spec.chance.get(metric if p.protocol == LEADERBOARD else "acc")
        out.append(TaskScore(p.name, metric, value, stderr, examples, shots, chance, majority, p.protocol,
                             p.fewshot_split, prompts, cut, lm.max_length, p.definition))
    return out


def _one_per_doc(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval logs a document once per filter; one entry each."""
    return list({s["doc_id"]: s for s in samples}.values())


def _cut_prompts(lm: LM, output_type: str, arguments: list[tuple]) -> tuple[int, int]:
    """(requests, requests longer than the model's context), measured with the model's own tokenization as its
    lm-eval class cuts them: a context and continuation beyond max_length + 1 tokens, a generation prompt beyond
    max_length minus the tokens it may generate."""
    cut = 0
    for context, second in arguments:
        if output_type == "generate_until":
            cut += len(lm.tok_encode(context)) > lm.max_length - second.get("max_gen_toks", lm.max_gen_toks)
        else:
            cut += len(lm.tok_encode(context + second)) > lm.max_length + 1
    return len(arguments), cut


def bootstrap_stderr(statistic: Callable[[list], float], items: list, iters: int = BOOTSTRAP_ITERS,
                     seed: int = 0) -> float | None:
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

