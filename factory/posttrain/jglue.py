"""JGLUE v1.3 (JCommonsenseQA, JNLI, JSTS, JSQuAD) in the eval data folder: readers that turn the local files into
the rows the Hugging Face dataset `Rakuten/JGLUE` serves (the rows lm-evaluation-harness's `ja_leaderboard_*`
tasks are written for), the task table, and the factory's own JSTS task, which no leaderboard defines.

Nothing here imports lm-eval, so the config can name the tasks cheaply; `harness.py` builds the lm-eval tasks.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from factory.errors import DataError

NLI_LABELS = ("entailment", "contradiction", "neutral")
"""JNLI's labels in the order of Rakuten/JGLUE's ClassLabel (and of the leaderboard's 含意 / 矛盾 / 中立)."""
SPLITS = {"validation": "valid", "train": "train"}
"""lm-eval split name -> JGLUE file name part."""

# The leaderboard has no JSTS task: this is the factory's own, in the leaderboard's format with a 0-5 question.
JSTS_DESCRIPTION = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
JSTS_PROMPT = ("### 指示：\n与えられた2つの文の意味がどのくらい近いかを、0（全く異なる）から5（同じ意味）までの整数で"
               "回答してください。\n\n### 入力：\n文1：{{ sentence1 }}\n文2：{{ sentence2 }}\n\n### 応答：")


def _json_lines(path: Path, keys: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(`file:line`, row) of a JSON Lines file whose rows have `keys`; one-line DataError otherwise."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg})") from None
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                raise DataError(f"{where}: missing {', '.join(missing)} (expected keys: {', '.join(keys)})")
            rows.append((where, row))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _ids(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The row's identifiers that it has (the local files carry them; the tests' rows need not)."""
    return {k: row[k] for k in keys if k in row}


def jcommonsenseqa_rows(path: Path) -> list[dict[str, Any]]:
    keys = ("question", *(f"choice{i}" for i in range(5)), "label")
    rows = []
    for where, r in _json_lines(path, keys):
        if not isinstance(r["label"], int) or not 0 <= r["label"] < 5:
            raise DataError(f"{where}: label {r['label']!r} is not a choice index 0-4")
        rows.append({**_ids(r, "q_id"), "question": r["question"],
                     **{f"choice{i}": str(r[f"choice{i}"]) for i in range(5)}, "label": r["label"]})
    return rows


def jnli_rows(path: Path) -> list[dict[str, Any]]:
    """The local files spell the label out; Rakuten/JGLUE serves its index, which the leaderboard's task reads
    (a spelled-out label would silently score 0.0 there)."""
    rows = []
    for where, r in _json_lines(path, ("sentence1", "sentence2", "label")):
        if r["label"] not in NLI_LABELS:
            raise DataError(f"{where}: label {r['label']!r} is not one of {', '.join(NLI_LABELS)}")
        rows.append({**_ids(r, "sentence_pair_id", "yjcaptions_id"), "sentence1": r["sentence1"],
                     "sentence2": r["sentence2"], "label": NLI_LABELS.index(r["label"])})
    return rows


def jsts_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for where, r in _json_lines(path, ("sentence1", "sentence2", "label")):
        score = float(r["label"])
        if not 0 <= score <= 5:
            raise DataError(f"{where}: similarity {score} outside 0-5")
        rows.append({**_ids(r, "sentence_pair_id", "yjcaptions_id"), "sentence1": r["sentence1"],
                     "sentence2": r["sentence2"], "label": score})
    return rows


def jsquad_rows(path: Path) -> list[dict[str, Any]]:
    """SQuAD v1 layout (data -> paragraphs -> qas) flattened to one row per question, the context kept whole
    (`title [SEP] text`: the leaderboard's prompt drops the title itself)."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        rows = [{"id": qa["id"], "title": article.get("title", ""), "context": paragraph["context"],
                 "question": qa["question"], "answers": {"text": [a["text"] for a in qa["answers"]],
                                                         "answer_start": [a.get("answer_start", -1)
                                                                          for a in qa["answers"]]},
                 "is_impossible": bool(qa.get("is_impossible", False))}
                for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: expected one JSON object with 'data' (SQuAD v1 layout): {e!r}") from None
    unanswered = [r["id"] for r in rows if not r["answers"]["text"]]
    if unanswered:
        raise DataError(f"{path}: question {unanswered[0]} has no answers")
    if not rows:
        raise DataError(f"{path}: no questions")
    return rows


def sts_prediction(loglikelihoods: list[float]) -> float:
    """Expected similarity under the model: the softmax of the six answers' log-likelihoods times 0..5."""
    top = max(loglikelihoods)
    weights = [math.exp(ll - top) for ll in loglikelihoods]
    return sum(i * w for i, w in enumerate(weights)) / sum(weights)


def sts_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, tuple[float, float]]:
    pair = (sts_prediction([ll for ll, _ in results]), doc["label"])
    return {"pearson": pair, "spearman": pair}


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank (Spearman's convention)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(pairs: list[tuple[float, float]]) -> float:
    """Pearson correlation of (prediction, gold) pairs; NaN when either side is constant."""
    xs, ys = [p for p, _ in pairs], [g for _, g in pairs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(pairs: list[tuple[float, float]]) -> float:
    """Spearman correlation: Pearson on the ranks."""
    return pearson(list(zip(_ranks([p for p, _ in pairs]), _ranks([g for _, g in pairs]))))


JSTS_TASK = dict(
    description=JSTS_DESCRIPTION, doc_to_text=JSTS_PROMPT, doc_to_choice=["0", "1", "2", "3", "4", "5"],
    doc_to_target=lambda doc: round(doc["label"]), target_delimiter="\n", output_type="multiple_choice",
    num_fewshot=3, process_results=sts_results,
    metric_list=[{"metric": "pearson", "aggregation": pearson, "higher_is_better": True},
                 {"metric": "spearman", "aggregation": spearman, "higher_is_better": True}])
"""lm-eval fields of the factory's own JSTS task (the few-shot answer is the rounded similarity)."""


@dataclass(frozen=True)
class TaskSpec:
    """One JGLUE task: its files in the eval data folder, its reader, and where its lm-eval definition lives."""

    stem: str
    """The JGLUE dataset name in the file names: `jglue/<stem>-<valid|train>-v1.3.json`."""
    title: str
    """How reports name it."""
    rows: Callable[[Path], list[dict[str, Any]]]
    metrics: tuple[str, ...]
    chance: dict[str, float]
    """Score of uniform random guessing, per metric (none for extractive QA)."""
    upstream: str | None = None
    """lm-evaluation-harness's task (`lm_eval/tasks/japanese_leaderboard/<upstream>.yaml`), run as it is on the
    local files; None: the factory's own task, `own`."""
    own: dict[str, Any] = field(default_factory=dict)

    def file(self, split: str) -> str:
        return f"jglue/{self.stem}-{SPLITS[split]}-v1.3.json"

    @property
    def classes(self) -> bool:
        """Whether `label` is a class, so a majority-class baseline means something."""
        return "acc" in self.metrics


TASKS: dict[str, TaskSpec] = {
    "jcommonsenseqa": TaskSpec("jcommonsenseqa", "JCommonsenseQA", jcommonsenseqa_rows, ("acc",), {"acc": 1 / 5},
                               upstream="ja_leaderboard_jcommonsenseqa"),
    "jnli": TaskSpec("jnli", "JNLI", jnli_rows, ("acc",), {"acc": 1 / 3}, upstream="ja_leaderboard_jnli"),
    "jsts": TaskSpec("jsts", "JSTS", jsts_rows, ("pearson", "spearman"), {"pearson": 0.0, "spearman": 0.0},
                     own=JSTS_TASK),
    "jsquad": TaskSpec("jsquad", "JSQuAD", jsquad_rows, ("exact_match",), {}, upstream="ja_leaderboard_jsquad"),
}
"""Every JGLUE task the eval stage runs, by the name configs use. MARC-ja has a leaderboard task too, but JGLUE
no longer distributes its data (it is rebuilt from the withdrawn Amazon reviews corpus), so it cannot be
supplied locally."""


def majority_share(labels: list[int]) -> float:
    """Accuracy of always answering the most frequent label."""
    return Counter(labels).most_common(1)[0][1] / len(labels)
