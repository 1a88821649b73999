"""JGLUE v1.3 tasks (JCommonsenseQA, JNLI, JSTS, JSQuAD): readers for the local validation files, prompts in
the format of lm-evaluation-harness's Japanese leaderboard, and the scoring functions the harness calls.

Nothing here imports lm-eval, so the config can name the tasks cheaply; `harness.py` turns a `TaskSpec` into
an lm-eval task.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from factory.errors import DataError

DESCRIPTION = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
NLI_LABELS = ("entailment", "contradiction", "neutral")
NLI_CHOICES = ["含意", "矛盾", "中立"]
STS_CHOICES = ["0", "1", "2", "3", "4", "5"]

JCQA_PROMPT = ("### 指示：\n出力は以下から選択してください：\n{% for choice in choices %}- {{ choice }}\n{% endfor %}"
               "\n### 入力：\n{{ question }}\n\n### 応答：")
JNLI_PROMPT = ("### 指示：\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立"
               "\n\n### 入力：\n前提：{{ sentence1 }}\n仮説：{{ sentence2 }}\n\n### 応答：")
# The leaderboard has no JSTS task; this asks for llm-jp-eval's 0-5 similarity in the leaderboard's format.
JSTS_PROMPT = ("### 指示：\n与えられた2つの文の意味がどのくらい近いかを、0（全く異なる）から5（同じ意味）までの整数で"
               "回答してください。\n\n### 入力：\n文1：{{ sentence1 }}\n文2：{{ sentence2 }}\n\n### 応答：")
JSQUAD_PROMPT = ("### 指示：\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力：\n文脈：{{ context }}"
                 "\n質問：{{ question }}\n\n### 応答：")


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


def read_jcommonsenseqa(path: Path) -> list[dict[str, Any]]:
    keys = ("question", *(f"choice{i}" for i in range(5)), "label")
    return [{"question": r["question"], "choices": [str(r[f"choice{i}"]) for i in range(5)], "label": int(r["label"])}
            for _, r in _json_lines(path, keys)]


def read_jnli(path: Path) -> list[dict[str, Any]]:
    docs = []
    for where, r in _json_lines(path, ("sentence1", "sentence2", "label")):
        if r["label"] not in NLI_LABELS:
            raise DataError(f"{where}: label {r['label']!r} is not one of {', '.join(NLI_LABELS)}")
        docs.append({"sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": NLI_LABELS.index(r["label"])})
    return docs


def read_jsts(path: Path) -> list[dict[str, Any]]:
    docs = []
    for where, r in _json_lines(path, ("sentence1", "sentence2", "label")):
        score = float(r["label"])
        if not 0 <= score <= 5:
            raise DataError(f"{where}: similarity {score} outside 0-5")
        # The few-shot answer is the rounded similarity; the score itself is what predictions are compared with.
        docs.append({"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": score, "label": round(score)})
    return docs


def read_jsquad(path: Path) -> list[dict[str, Any]]:
    """SQuAD v1 layout: data -> paragraphs -> qas; the context drops JGLUE's `title [SEP]` prefix."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: expected one JSON object with 'data' (SQuAD v1 layout): {e}") from None
    docs = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"].split("[SEP]")[-1].strip()
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                if not answers:
                    raise DataError(f"{path}: question {qa['id']} has no answers")
                docs.append({"id": qa["id"], "context": context, "question": qa["question"], "answers": answers})
    if not docs:
        raise DataError(f"{path}: no questions")
    return docs


def sts_prediction(loglikelihoods: list[float]) -> float:
    """Expected similarity under the model: the softmax of the six answers' log-likelihoods times 0..5."""
    top = max(loglikelihoods)
    weights = [math.exp(ll - top) for ll in loglikelihoods]
    return sum(i * w for i, w in enumerate(weights)) / sum(weights)


def sts_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, tuple[float, float]]:
    pair = (sts_prediction([ll for ll, _ in results]), doc["score"])
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


def _normalize(text: str) -> str:
    return "".join(text.split())  # Japanese answers are compared without any whitespace


def char_f1(prediction: str, gold: str) -> float:
    """Character-level F1 (JGLUE's JSQuAD metric: Japanese has no word boundaries)."""
    pred, ref = Counter(_normalize(prediction)), Counter(_normalize(gold))
    common = sum((pred & ref).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(pred.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def squad_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match and character F1 against the best-matching of the gold answers (SQuAD v1 convention)."""
    answer = results[0]
    return {"exact_match": max(float(_normalize(answer) == _normalize(g)) for g in doc["answers"]),
            "f1": max(char_f1(answer, g) for g in doc["answers"])}


def _mean_metric(name: str) -> dict[str, Any]:
    return {"metric": name, "aggregation": "mean", "higher_is_better": True}


@dataclass(frozen=True)
class TaskSpec:
    """One task: its file under the eval data folder, reader, leaderboard defaults and lm-eval fields."""

    file: str
    read: Callable[[Path], list[dict[str, Any]]]
    metrics: tuple[str, ...]
    num_fewshot: int
    """The Japanese leaderboard's default shots (JSTS: as JNLI)."""
    chance: dict[str, float]
    """Score of uniform random guessing, per metric (none for extractive QA)."""
    lm_eval: dict[str, Any] = field(default_factory=dict)
    """lm-eval TaskConfig fields: prompt, choices, output type, metrics."""

    @property
    def classes(self) -> bool:
        """Whether `label` is a class, so a majority-class baseline means something."""
        return "acc" in self.metrics


TASKS: dict[str, TaskSpec] = {
    "jcommonsenseqa": TaskSpec(
        "jglue/jcommonsenseqa-valid-v1.3.json", read_jcommonsenseqa, ("acc",), 3, {"acc": 1 / 5},
        dict(doc_to_text=JCQA_PROMPT, doc_to_choice="choices", doc_to_target="label", output_type="multiple_choice",
             metric_list=[_mean_metric("acc")])),
    "jnli": TaskSpec(
        "jglue/jnli-valid-v1.3.json", read_jnli, ("acc",), 3, {"acc": 1 / 3},
        dict(doc_to_text=JNLI_PROMPT, doc_to_choice=NLI_CHOICES, doc_to_target="label", output_type="multiple_choice",
             metric_list=[_mean_metric("acc")])),
    "jsts": TaskSpec(
        "jglue/jsts-valid-v1.3.json", read_jsts, ("pearson", "spearman"), 3, {"pearson": 0.0, "spearman": 0.0},
        dict(doc_to_text=JSTS_PROMPT, doc_to_choice=STS_CHOICES, doc_to_target="label", output_type="multiple_choice",
             process_results=sts_results,
             metric_list=[{"metric": "pearson", "aggregation": pearson, "higher_is_better": True},
                          {"metric": "spearman", "aggregation": spearman, "higher_is_better": True}])),
    "jsquad": TaskSpec(
        "jglue/jsquad-valid-v1.3.json", read_jsquad, ("exact_match", "f1"), 2, {},
        dict(doc_to_text=JSQUAD_PROMPT, doc_to_target="{{ answers[0] }}", output_type="generate_until",
             process_results=squad_results, metric_list=[_mean_metric("exact_match"), _mean_metric("f1")],
             filter_list=[{"name": "whitespaces", "filter": [{"function": "remove_whitespace"},
                                                              {"function": "take_first"}]}])),
}
"""Every task the eval stage runs, by the name configs use."""


def majority_share(labels: list[int]) -> float:
    """Accuracy of always answering the most frequent label."""
    return Counter(labels).most_common(1)[0][1] / len(labels)
