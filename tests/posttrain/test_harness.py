"""The JGLUE task definitions run through lm-evaluation-harness's own evaluator against a model stub whose
log-likelihoods and generations are fixed, so every score is known by hand; plus the backend choice."""

from __future__ import annotations

import importlib.util
import math
from typing import Callable

import pytest
from lm_eval.api.model import LM

from factory.errors import ConfigError
from factory.posttrain import harness
from factory.posttrain.benchmark_config import HarnessConfig
from factory.posttrain.jglue import DESCRIPTION


class FixedLM(LM):
    """An lm-eval model whose answers come from functions of the prompt; it records every request."""

    def __init__(self, loglikelihood: Callable[[str, str], float] | None = None,
                 generate: Callable[[str], str] | None = None):
        super().__init__()
        self.score, self.answer, self.requests = loglikelihood, generate, []

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.requests += [r.args for r in requests]
        return [(self.score(context, continuation), False) for context, continuation in (r.args for r in requests)]

    def generate_until(self, requests, disable_tqdm: bool = False):
        self.requests += [r.args for r in requests]
        return [self.answer(r.args[0]) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def _question(context: str) -> str:
    """The text of the scored example: the last input block of the prompt."""
    return context.rsplit("### 入力：\n", 1)[1].split("\n\n### 応答：")[0]


def _run(lm: LM, eval_data, **harness_fields) -> dict:
    scores = harness.evaluate(lm, HarnessConfig(**harness_fields), eval_data, seed=0)
    return {(s.task, s.metric): s for s in scores}


def test_jcommonsenseqa_accuracy_stderr_and_prompt_by_hand(eval_data):
    # The stub prefers one choice per question: right on three of the five, wrong on two.
    picks = {"田んぼが広がる風景を何という？": "田園", "ふたつをくっつけるのは？": "接着剤", "雨の日に差すものは？": "靴",
             "魚が泳ぐ場所は？": "川", "夜空に光るものは？": "石"}
    lm = FixedLM(lambda context, choice: 0.0 if choice == "\n" + picks[_question(context)] else -5.0)
    s = _run(lm, eval_data, tasks=["jcommonsenseqa"], num_fewshot=0)["jcommonsenseqa", "acc"]
    assert (s.value, s.examples, s.num_fewshot, s.chance) == (0.6, 5, 0, 0.2)
    assert s.stderr == pytest.approx(math.sqrt(0.3 / 5))  # sample variance of (1,1,0,1,0) is 0.3
    assert s.majority == pytest.approx(2 / 5)  # labels 2, 0, 1, 2, 4
    assert lm.requests[0] == (DESCRIPTION + "### 指示：\n出力は以下から選択してください：\n- 畑\n- 海\n- 田園\n- 地方\n- 牧場\n\n"
                              "### 入力：\n田んぼが広がる風景を何という？\n\n### 応答：", "\n畑")
    assert len(lm.requests) == 5 * 5


def test_few_shot_examples_come_from_the_split_but_never_the_scored_example(eval_data):
    lm = FixedLM(lambda context, choice: -len(choice))
    s = _run(lm, eval_data, tasks=["jnli"], num_fewshot=2)["jnli", "acc"]
    assert s.num_fewshot == 2
    for context, _ in lm.requests:
        blocks = context.split("### 入力：\n")[1:]
        assert len(blocks) == 3
        scored = blocks[-1]
        assert all(b.split("\n\n### 応答：")[0] != scored.split("\n\n### 応答：")[0] for b in blocks[:2])
        assert all(b.split("### 応答：\n")[1].split("\n")[0] in ("含意", "矛盾", "中立") for b in blocks[:2])


def test_jnli_always_neutral_scores_the_majority_class(eval_data):
    lm = FixedLM(lambda context, choice: 0.0 if choice == "\n中立" else -1.0)
    s = _run(lm, eval_data, tasks=["jnli"], num_fewshot=0, limit=4)["jnli", "acc"]
    assert (s.value, s.majority, s.chance) == (0.5, 0.5, pytest.approx(1 / 3))  # labels neutral x2 of 4


def test_jsts_correlations_by_hand(eval_data):
    # All the mass on one similarity per pair: predictions 1, 3, 2, 4 against gold 1, 2, 3, 4.
    predicted = {"文0です。": "1", "文1です。": "3", "文2です。": "2", "文3です。": "4"}

    def score(context: str, choice: str) -> float:
        first = _question(context).split("\n")[0].removeprefix("文1：")
        return 0.0 if choice == "\n" + predicted[first] else -50.0

    scores = _run(FixedLM(score), eval_data, tasks=["jsts"], num_fewshot=0)
    for metric in ("pearson", "spearman"):
        s = scores["jsts", metric]
        assert s.value == pytest.approx(0.8) and s.chance == 0.0 and s.examples == 4
        assert 0 < s.stderr < 1  # bootstrap over the four pairs


def test_jsquad_exact_match_and_character_f1_by_hand(eval_data):
    answers = {"梅雨がないのは北海道とどこか。": " 小笠原\n", "梅雨とは何季の一種か？": "雨季です",
               "梅雨はどのあたりで見られるか？": "北アメリカ"}
    lm = FixedLM(generate=lambda context: answers[_question(context).split("\n質問：")[1]])
    scores = _run(lm, eval_data, tasks=["jsquad"], num_fewshot=0, max_gen_tokens=12)
    assert scores["jsquad", "exact_match"].value == pytest.approx(1 / 3)
    f1 = (1 + 2 / 3 + 2 * (1 / 5) * (1 / 4) / (1 / 5 + 1 / 4)) / 3
    assert scores["jsquad", "f1"].value == pytest.approx(f1)
    assert scores["jsquad", "f1"].chance is None
    context, generation = lm.requests[0]
    assert "文脈：梅雨は、北海道" in context and generation["until"] == ["\n\n"] and generation["max_gen_toks"] == 12


def test_backend_choice_and_a_missing_vllm():
    assert harness.choose_backend(HarnessConfig(), "cpu") == "hf"
    assert harness.choose_backend(HarnessConfig(backend="hf"), "cuda") == "hf"
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ConfigError, match="eval.harness.backend=vllm: vllm is not installed"):
        harness.make_lm("vllm", None, HarnessConfig(backend="vllm"))
