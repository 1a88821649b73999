"""llm-jp-eval's protocol for the JGLUE tasks it shares with the eval stage (JCommonsenseQA, JNLI, JSQuAD): the
model generates an answer after llm-jp-eval's Alpaca-style prompt (its instruction, few shots from train), and
the first paragraph of the generation, NFKC-normalized, must equal the gold answer exactly.

Which details come from llm-jp-eval's public code and which could not be confirmed is listed, one by one, in
docs/stages/posttrain.md ("llm-jp-eval protocol"); `PROTOCOL_VERSION` names what was followed.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable

from factory.posttrain.jglue import NLI_LABELS

PROTOCOL = "llm-jp-eval"
PROTOCOL_VERSION = "llm-jp-eval v1 prompt format (evaluation prompt and JGLUE processors of the 1.x series)"
"""The llm-jp-eval release this follows, as far as it could be pinned (docs/stages/posttrain.md lists what was
confirmed and what was not)."""
NUM_FEWSHOT = 4
"""Shots per prompt: llm-jp-eval's configured default (unconfirmed; see the docs)."""
SHOT_SEED = 42
"""llm-jp-eval shuffles a dataset's train split with this seed when it prepares it and takes its first shots."""
INTRO = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。"


@dataclass(frozen=True)
class ProtocolTask:
    """One task as llm-jp-eval prepares it: its instruction, its answer budget and the (input, output) sample
    a JGLUE row becomes."""

    instruction: str
    output_length: int
    """Generated tokens allowed (llm-jp-eval's `output_length`)."""
    sample: Callable[[dict[str, Any]], tuple[str, str]]


def _jcommonsenseqa(row: dict[str, Any]) -> tuple[str, str]:
    choices = ",".join(f"{i}.{row[f'choice{i}']}" for i in range(5))
    return f"質問：{row['question']}\n選択肢：{choices}", str(row["label"])


def _jnli(row: dict[str, Any]) -> tuple[str, str]:
    return f"前提：{row['sentence1']}\n仮説：{row['sentence2']}", NLI_LABELS[row["label"]]


def _jsquad(row: dict[str, Any]) -> tuple[str, str]:
    return f"文章：{row['context']}\n質問：{row['question']}", row["answers"]["text"][0]


TASKS: dict[str, ProtocolTask] = {
    "jcommonsenseqa": ProtocolTask(
        "質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号（例：0）で"
        "するものとします。 回答となる数値をint型で返し、他には何も含めないことを厳守してください。", 1, _jcommonsenseqa),
    "jnli": ProtocolTask(
        "前提と仮説の関係をentailment、contradiction、neutralの中から回答してください。それ以外には何も含めないことを"
        "厳守してください。\n\n制約：\n- 前提から仮説が、論理的知識や常識的知識を用いて導出可能である場合はentailmentと"
        "出力\n- 前提と仮説が両立しえない場合はcontradictionと出力\n- そのいずれでもない場合はneutralと出力", 3, _jnli),
    "jsquad": ProtocolTask(
        "質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。 それ以外には何も含めないことを"
        "厳守してください。", 25, _jsquad),
}
"""The JGLUE tasks llm-jp-eval shares with the eval stage. Its JSTS is left out: the public copies of its
instruction disagree (0〜5 or 0.0〜5.0), so it cannot be reproduced without guessing."""


def samples(name: str, rows: list[dict[str, Any]], shuffle: bool) -> list[dict[str, Any]]:
    """JGLUE rows as llm-jp-eval's samples (`input`, `output`, and the row's `label` for the majority class);
    a train split shuffled as llm-jp-eval prepares it, so its first rows are the shots."""
    out = [{"input": i, "output": o, "label": row.get("label")} for row in rows for i, o in [TASKS[name].sample(row)]]
    if shuffle:
        random.Random(SHOT_SEED).shuffle(out)
    return out


def doc_to_text(doc: dict[str, Any]) -> str:
    return f"### 入力:\n{doc['input']}\n\n### 応答:\n"


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["output"]


def answer(generation: str) -> str:
    """The answer llm-jp-eval reads from a generation: its first paragraph, NFKC-normalized, stripped."""
    return unicodedata.normalize("NFKC", generation.split("\n\n")[0]).strip()


def exact_match(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"exact_match": float(answer(results[0]) == unicodedata.normalize("NFKC", doc["output"]).strip())}


def task_fields(name: str, num_fewshot: int | None) -> dict[str, Any]:
    """lm-eval fields that make llm-jp-eval's prompt: the intro and instruction as the description, then each
    shot as `### 入力:` / `### 応答:` blocks separated by a blank line, the first shots of the split in order."""
    task = TASKS[name]
    return dict(
        description=f"{INTRO}\n\n### 指示:\n{task.instruction}\n\n", doc_to_text=doc_to_text,
        doc_to_target=doc_to_target, target_delimiter="", fewshot_delimiter="\n\n",
        fewshot_config={"sampler": "first_n"}, num_fewshot=NUM_FEWSHOT if num_fewshot is None else num_fewshot,
        output_type="generate_until", process_results=exact_match,
        generation_kwargs={"until": ["\n\n"], "do_sample": False, "max_gen_toks": task.output_length},
        metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}])

