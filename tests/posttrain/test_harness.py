"""The JGLUE tasks of both protocols run through lm-evaluation-harness's own evaluator against a model stub whose
log-likelihoods and generations are fixed, so every score, prompt, shot and cut prompt is known by hand; plus
the backend choice."""

from __future__ import annotations

import importlib.util
import logging
import math
import random
import unicodedata
from typing import Callable

import pytest
from lm_eval.api.model import LM

from factory.errors import ConfigError
from factory.posttrain import harness, llm_jp_eval
from factory.posttrain.benchmark_config import HarnessConfig
from factory.posttrain.harness_tasks import SHOTS_FROM_VALIDATION
from tests.posttrain.conftest import DEMO_DATA, write_jsonl

LEADERBOARD_DESCRIPTION = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
TRAIN_ROWS = [{"q_id": 100 + i, "question": f"練習問題{i}？", **{f"choice{k}": f"答{i}-{k}" for k in range(5)},
               "label": i % 5} for i in range(8)]


class FixedLM(LM):
    """An lm-eval model whose answers come from functions of the prompt; it records every request. One token per
    character, and a context of `max_length` tokens."""

    def __init__(self, loglikelihood: Callable[[str, str], float] | None = None,
                 generate: Callable[[str], str] | None = None, max_length: int = 10**6):
        super().__init__()
        self.score, self.answer, self.requests, self.max_length = loglikelihood, generate, [], max_length
        self.max_gen_toks = 256

    def tok_encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.requests += [r.args for r in requests]
        return [(self.score(context, continuation), False) for context, continuation in (r.args for r in requests)]

    def generate_until(self, requests, disable_tqdm: bool = False):
        self.requests += [r.args for r in requests]
        return [self.answer(r.args[0]) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def _question(context: str, heading: str = "### 入力：\n") -> str:
    """The text of the scored example: the last input block of the prompt."""
    return context.rsplit(heading, 1)[1].split("\n\n### 応答")[0]


def harness_protocols() -> list[str]:
    """Both protocols: llm-jp-eval has no JSTS, so it adds nothing there."""
    return ["lm-evaluation-harness", "llm-jp-eval"]


def _run(lm: LM, eval_data, **harness_fields) -> dict:
    harness_fields.setdefault("protocols", ["lm-evaluation-harness"])
    scores = harness.evaluate(lm, HarnessConfig(**harness_fields), eval_data, seed=0)
    return {(s.protocol, s.task, s.metric): s for s in scores}


def test_jcommonsenseqa_through_the_upstream_definition_by_hand(eval_data):
    # The stub prefers one choice per question: right on three of the five, wrong on two.
    picks = {"田んぼが広がる風景を何という？": "田園", "ふたつをくっつけるのは？": "接着剤", "雨の日に差すものは？": "靴",
             "魚が泳ぐ場所は？": "川", "夜空に光るものは？": "石"}
    lm = FixedLM(lambda context, choice: 0.0 if choice == "\n" + picks[_question(context)] else -5.0)
    s = _run(lm, eval_data, tasks=["jcommonsenseqa"], num_fewshot=0)["lm-evaluation-harness", "jcommonsenseqa", "acc"]
    assert (s.value, s.examples, s.num_fewshot, s.chance) == (0.6, 5, 0, 0.2)
    assert s.stderr == pytest.approx(math.sqrt(0.3 / 5))  # sample variance of (1,1,0,1,0) is 0.3
    assert s.majority == pytest.approx(2 / 5)  # labels 2, 0, 1, 2, 4
    assert s.definition == "lm_eval/tasks/japanese_leaderboard/ja_leaderboard_jcommonsenseqa.yaml"
    assert lm.requests[0] == (LEADERBOARD_DESCRIPTION + "### 指示：\n出力は以下から選択してください：\n- 畑\n- 海\n- 田園\n"
                              "- 地方\n- 牧場\n\n### 入力：\n田んぼが広がる風景を何という？\n\n### 応答：", "\n畑")
    assert (s.prompts, s.prompts_cut, len(lm.requests)) == (25, 0, 25)


def test_shots_come_from_train_when_the_folder_has_it_else_from_the_other_validation_examples(eval_data):
    write_jsonl(eval_data / "jglue" / "jcommonsenseqa-train-v1.3.json", TRAIN_ROWS)
    lm = FixedLM(lambda context, choice: -len(choice))
    scores = _run(lm, eval_data, tasks=["jcommonsenseqa", "jnli"], num_fewshot=2)
    jcqa, jnli = (scores["lm-evaluation-harness", task, "acc"] for task in ("jcommonsenseqa", "jnli"))
    assert (jcqa.fewshot_split, jnli.fewshot_split) == ("train", SHOTS_FROM_VALIDATION)
    train = {r["question"] for r in TRAIN_ROWS}
    for context, _ in lm.requests:
        blocks = [b.split("\n\n### 応答：")[0] for b in context.split("### 入力：\n")[1:]]
        assert len(blocks) == 3
        if "前提：" in blocks[-1]:  # JNLI: shots from validation, never the scored example
            assert blocks[-1] not in blocks[:2]
        else:
            assert set(blocks[:2]) <= train


def test_jnli_labels_reach_the_upstream_task_as_its_choice_indices(eval_data):
    # Spelled-out labels would make every answer wrong (0.0); mapped, always-neutral scores the neutral share.
    lm = FixedLM(lambda context, choice: 0.0 if choice == "\n中立" else -1.0)
    s = _run(lm, eval_data, tasks=["jnli"], num_fewshot=0, limit=4)["lm-evaluation-harness", "jnli", "acc"]
    assert (s.value, s.majority, s.chance) == (0.5, 0.5, pytest.approx(1 / 3))  # labels neutral x2 of 4


def test_jsts_the_factorys_own_task_correlations_by_hand(eval_data):
    # All the mass on one similarity per pair: predictions 1, 3, 2, 4 against gold 1, 2, 3, 4.
    predicted = {"文0です。": "1", "文1です。": "3", "文2です。": "2", "文3です。": "4"}

    def score(context: str, choice: str) -> float:
        first = _question(context).split("\n")[0].removeprefix("文1：")
        return 0.0 if choice == "\n" + predicted[first] else -50.0

    scores = _run(FixedLM(score), eval_data, tasks=["jsts"], num_fewshot=0, protocols=harness_protocols())
    assert [k for k in scores if k[1] == "jsts"] == [("lm-evaluation-harness", "jsts", m)
                                                     for m in ("pearson", "spearman")]
    for metric in ("pearson", "spearman"):
        s = scores["lm-evaluation-harness", "jsts", metric]
        assert s.value == pytest.approx(0.8) and s.chance == 0.0 and s.examples == 4
        assert 0 < s.stderr < 1  # bootstrap over the four pairs
        assert s.definition.startswith("the factory's own task")


def test_jsquad_upstream_exact_match_by_hand(eval_data):
    # Leading and trailing whitespace is ignored; only the first gold answer counts (小笠原 is the second).
    answers = {"梅雨がないのは北海道とどこか。": "小笠原", "梅雨とは何季の一種か？": " 雨季\n",
               "梅雨はどのあたりで見られるか？": "北アメリカ"}
    lm = FixedLM(generate=lambda context: answers[_question(context).split("\n質問：")[1]])
    scores = _run(lm, eval_data, tasks=["jsquad"], num_fewshot=0, max_gen_tokens=12)
    s = scores["lm-evaluation-harness", "jsquad", "exact_match"]
    assert s.value == pytest.approx(1 / 3) and s.chance is None
    context, generation = lm.requests[0]
    assert "文脈：梅雨は、北海道" in context and "梅雨 [SEP]" not in context  # the leaderboard drops the title
    assert generation["until"] == ["\n\n"] and generation["max_gen_toks"] == 12


def _llm_jp_eval_prompt(name: str, shots: list[dict], doc: dict) -> str:
    """llm-jp-eval's evaluation prompt written out as its get_evaluation_prompt builds it."""
    text = ("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
            f"### 指示:\n{llm_jp_eval.TASKS[name].instruction}")
    for shot in shots:
        text += f"\n\n### 入力:\n{shot['input']}\n\n### 応答:\n{shot['output']}"
    return text + f"\n\n### 入力:\n{doc['input']}\n\n### 応答:\n"


def test_llm_jp_eval_prompts_shots_and_exact_match_by_hand(eval_data):
    write_jsonl(eval_data / "jglue" / "jcommonsenseqa-train-v1.3.json", TRAIN_ROWS)
    # Right on questions 0 and 2 (one in full-width digits, one with a second paragraph), wrong on the rest.
    replies = {"田んぼが広がる風景を何という？": "２", "ふたつをくっつけるのは？": "3", "雨の日に差すものは？": " 1\n\n2",
               "魚が泳ぐ場所は？": "川", "夜空に光るものは？": ""}
    lm = FixedLM(generate=lambda context: replies[_question(context, "### 入力:\n").split("\n")[0].removeprefix("質問：")])
    scores = _run(lm, eval_data, tasks=["jcommonsenseqa"], protocols=["llm-jp-eval"])
    s = scores["llm-jp-eval", "jcommonsenseqa", "exact_match"]
    assert (s.value, s.num_fewshot, s.fewshot_split, s.chance) == (0.4, 4, "train", 0.2)
    assert s.definition == llm_jp_eval.PROTOCOL_VERSION
    shuffled = [{"input": f"質問：{r['question']}\n選択肢：" + ",".join(f"{k}.{r[f'choice{k}']}" for k in range(5)),
                 "output": str(r["label"])} for r in TRAIN_ROWS]
    random.Random(42).shuffle(shuffled)
    doc = {"input": "質問：田んぼが広がる風景を何という？\n選択肢：0.畑,1.海,2.田園,3.地方,4.牧場"}
    context, generation = lm.requests[0]
    assert context == _llm_jp_eval_prompt("jcommonsenseqa", shuffled[:4], doc)
    assert generation["max_gen_toks"] == 1 and generation["until"] == ["\n\n"]
    assert unicodedata.normalize("NFKC", "２") == "2"


def test_llm_jp_eval_jnli_answers_are_labels_and_jsquad_answers_are_spans(eval_data):
    jnli_replies = iter(["neutral", "entailment\n\n(reason)", "Neutral", "contradiction"])
    lm = FixedLM(generate=lambda context: next(jnli_replies) if "前提：" in context else "小笠原諸島")
    scores = _run(lm, eval_data, tasks=["jnli", "jsquad"], protocols=["llm-jp-eval"], num_fewshot=1)
    jnli, jsquad = scores["llm-jp-eval", "jnli", "exact_match"], scores["llm-jp-eval", "jsquad", "exact_match"]
    assert (jnli.value, jnli.fewshot_split, jnli.majority) == (0.75, SHOTS_FROM_VALIDATION, 0.5)  # case counts
    assert jsquad.value == pytest.approx(1 / 3) and jsquad.chance is None
    jnli_context = next(c for c, _ in lm.requests if "前提：" in c)
    assert "### 入力:\n前提：" in jnli_context and jnli_context.count("### 入力:") == 2
    squad_context, squad_generation = next(r for r in lm.requests if "文章：" in r[0])
    assert "文章：梅雨 [SEP] 梅雨は" in squad_context and squad_generation["max_gen_toks"] == 25


def test_cut_prompts_are_counted_per_task_and_warned_about(eval_data, caplog):
    # One token per character: JCQA's choices prompts are about 70 tokens, JNLI's about 90.
    lm = FixedLM(lambda context, choice: 0.0, generate=lambda context: "0", max_length=80)
    with caplog.at_level(logging.WARNING, logger="factory.posttrain.harness"):
        scores = _run(lm, eval_data, tasks=["jcommonsenseqa", "jnli"], num_fewshot=0, protocols=harness_protocols())
    lengths = {"jcommonsenseqa": [], "jnli": []}
    for context, second in lm.requests:
        task = "jnli" if "前提" in context else "jcommonsenseqa"
        lengths[task].append(len(context) > 80 - second["max_gen_toks"] if isinstance(second, dict)
                             else len(context + second) > 81)
    for task, cut in lengths.items():
        ll, gen = (scores[p, task, m] for p, m in (("lm-evaluation-harness", "acc"), ("llm-jp-eval", "exact_match")))
        assert ll.prompts + gen.prompts == len(cut) and ll.prompts_cut + gen.prompts_cut == sum(cut)
    jnli = scores["lm-evaluation-harness", "jnli", "acc"]
    assert jnli.truncation() == "JNLI: 12 of 12 prompts cut to 80 tokens"
    assert "eval: JNLI: 12 of 12 prompts cut to 80 tokens (lm-evaluation-harness); the model never saw" in caplog.text


def test_backend_choice_and_a_missing_vllm():
    assert harness.choose_backend(HarnessConfig(), "cpu") == "hf"
    assert harness.choose_backend(HarnessConfig(backend="hf"), "cuda") == "hf"
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ConfigError, match="eval.harness.backend=vllm: vllm is not installed"):
        harness.make_lm("vllm", None, HarnessConfig(backend="vllm"))



def test_the_stage_scores_what_lm_evals_own_upstream_task_scores(llama_dir, tmp_path):
    """The same tiny model and examples (the JGLUE rows the demo ships) through lm-eval's own registry and API
    (the leaderboard tasks by name, their data source overridden as a user of lm-eval would): the same prompts,
    log-likelihoods and accuracies."""
    import json

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factory.posttrain.harness_tasks import upstream_tasks

    class RecordingHFLM(HFLM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            results = super().loglikelihood(requests, disable_tqdm)
            self.records += [(*r.args, round(ll, 5)) for r, (ll, _) in zip(requests, results)]
            return results

    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(llama_dir)

    def lm() -> RecordingHFLM:
        out = RecordingHFLM(pretrained=model, tokenizer=tok, batch_size=8)
        out.records = []
        return out

    data = DEMO_DATA / "eval"
    stage_lm = lm()
    stage = harness.evaluate(stage_lm, HarnessConfig(tasks=["jcommonsenseqa", "jnli"], protocols=[
        "lm-evaluation-harness"]), data, seed=0)

    # The files converted here by hand: JNLI's labels as Rakuten/JGLUE's indices, everything else as it is.
    def copy(name: str, label=lambda v: v) -> str:
        rows = [json.loads(line) for line in (data / "jglue" / name).read_text(encoding="utf-8").splitlines()]
        path = tmp_path / name
        path.write_text("".join(json.dumps({**r, "label": label(r["label"])}, ensure_ascii=False) + "\n"
                                for r in rows), encoding="utf-8")
        return str(path)

    nli = ["entailment", "contradiction", "neutral"].index
    jcqa = {"task": "ja_leaderboard_jcommonsenseqa", "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {
        "data_files": {"train": copy("jcommonsenseqa-train-v1.3.json"),
                       "validation": copy("jcommonsenseqa-valid-v1.3.json")}}}
    # No JNLI train rows (the demo ships none, the offline mirror has none): shots from validation, as the stage.
    jnli = {"task": "ja_leaderboard_jnli", "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {
        "data_files": {"validation": copy("jnli-valid-v1.3.json", nli)}},
        "training_split": None, "fewshot_split": "validation", "test_split": "validation"}
    manager = TaskManager(include_defaults=False, include_path=upstream_tasks().include_path)
    tasks = manager.load({"group": "parity", "task": [jcqa, jnli]})["tasks"]
    upstream_lm = lm()
    results = simple_evaluate(model=upstream_lm, tasks=list(tasks.values()), random_seed=0,
                              numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)["results"]

    assert sorted(stage_lm.records) == sorted(upstream_lm.records) and len(stage_lm.records) == 10 * 5 + 10 * 3
    by_task = {s.task: s for s in stage}
    for name in ("jcommonsenseqa", "jnli"):
        row = results[f"ja_leaderboard_{name}"]
        assert by_task[name].value == row["acc,none"] and by_task[name].stderr == row["acc_stderr,none"]
        assert by_task[name].num_fewshot == 3
    assert (by_task["jcommonsenseqa"].fewshot_split, by_task["jnli"].fewshot_split) == ("train", SHOTS_FROM_VALIDATION)
