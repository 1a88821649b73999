"""Japanese MT-Bench: judge requests in FastChat's layout, ratings, scores by hand, answers from a tiny model,
judgements from a scripted judge behind the real loopback server, resume, and a judge that is down."""

from __future__ import annotations

import json
import math
import socket
import threading

import pytest

from factory.endpoints.client import EndpointError
from factory.endpoints.server import ChatServer
from factory.errors import DataError
from factory.jsonl_log import JsonlLog
from factory.posttrain import mt_bench
from factory.posttrain.benchmark_config import JudgeConfig, MtBenchConfig
from tests.posttrain.conftest import MT_JUDGE_PROMPTS, ScriptedJudge, free_port, write_jsonl


def test_judge_requests_use_the_reference_where_the_category_has_one(eval_data):
    questions = mt_bench.load_questions(eval_data, None)
    prompts = mt_bench.load_judge_prompts(eval_data / "japanese_mt_bench" / "judge_prompts.jsonl")
    writing, math_question = questions
    assert writing.reference is None and math_question.reference == ["2です。", "6です。"]
    assert [mt_bench.judge_prompt_name(math_question, t) for t in (1, 2)] == ["single-math-v1",
                                                                           "single-math-v1-multi-turn"]
    system, user = mt_bench.judge_messages(prompts["single-math-v1"], math_question, ["3です。", "9です。"], 1)
    assert system == {"role": "system", "content": "judge"}
    assert user["content"] == "single turn with reference\nQ: 1+1は？\nREF: 2です。\nA: 3です。"
    _, user = mt_bench.judge_messages(prompts["single-v1-multi-turn"], writing, ["a1", "a2"], 2)
    assert user["content"] == ("multi turn\nQ1: 旅行の計画を書いてください。\nA1: a1\nQ2: もっと短くしてください。\n"
                               "A2: a2")
    assert [q.id for q in mt_bench.load_questions(eval_data, [2])] == [2]


def test_ratings_and_scores_by_hand():
    assert mt_bench.parse_rating("good. Rating: [[7]]") == 7.0
    assert mt_bench.parse_rating("[[8.5]]") == 8.5 and mt_bench.parse_rating("score [6]") == 6.0
    assert mt_bench.parse_rating("no verdict") is None
    rows = [("a", 0, 1, 8.0), ("a", 0, 2, 6.0), ("b", 0, 1, 3.0), ("b", 0, 2, None),
            ("a", 1, 1, 9.0), ("a", 1, 2, 7.0), ("b", 1, 1, 5.0)]
    summary = mt_bench.summarize([{"category": c, "sample": k, "turn": t, "score": s} for c, k, t, s in rows],
                                 "judge-x", samples=2, refused_turns=1)
    # sample 0: (8 + 6 + 3) / 3; sample 1: (9 + 7 + 5) / 3; spread: their standard deviation
    means = [17 / 3, 7.0]
    assert summary == {"judge_model": "judge-x", "samples": 2, "judged": 7, "rated": 6, "refused_turns": 1,
                       "overall": round(38 / 6, 3), "overall_std": round(abs(means[1] - means[0]) / math.sqrt(2), 3),
                       "per_sample": [round(17 / 3, 3), 7.0], "turn1": 6.25,
                       "turn2": 6.5, "categories": {"a": 7.5, "b": 4.0}}


def test_a_japanese_judge_prompt_set_is_read_from_its_file_and_checked(eval_data, tmp_path):
    ja = [{**p, "system_prompt": "あなたは公平な審査員です。", "prompt_template": "[質問]\n" + p["prompt_template"]}
          for p in MT_JUDGE_PROMPTS]
    path = write_jsonl(tmp_path / "judge_ja_prompts.jsonl", ja)
    judge = JudgeConfig(base_url="http://127.0.0.1:1/v1", model="x", prompts=path)
    assert mt_bench.judge_prompts_file(eval_data, judge) == path
    prompts = mt_bench.load_judge_prompts(path)
    writing = mt_bench.load_questions(eval_data, [1])[0]
    system, user = mt_bench.judge_messages(prompts["single-v1"], writing, ["案です。"], 1)
    assert system["content"] == "あなたは公平な審査員です。" and user["content"].startswith("[質問]\nsingle turn")
    short = write_jsonl(tmp_path / "short.jsonl", ja[:2])
    with pytest.raises(DataError, match=rf"^{short}: missing judge prompts single-v1-multi-turn, "
                                        r"single-math-v1-multi-turn \(FastChat's names are expected\)$"):
        mt_bench.load_judge_prompts(short)


def test_answers_keep_the_prompt_whole_or_refuse_the_turn(llama_dir, eval_data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    question = mt_bench.load_questions(eval_data, [1])
    first = [{"role": "user", "content": question[0].turns[0]}]
    length = len(tok.apply_chat_template(first, add_generation_prompt=True, return_dict=True)["input_ids"])
    model.config.max_position_embeddings = length + 3  # room for three tokens after turn 1, none after turn 2
    config = MtBenchConfig(max_new_tokens=50, samples=2, judge={"base_url": "http://127.0.0.1:1/v1", "model": "x"})
    calls = []
    generate = model.generate
    model.generate = lambda **kw: calls.append((kw["input_ids"].shape[1], kw["max_new_tokens"])) or generate(**kw)
    answers = mt_bench.generate_answers(model, tok, question, config, [tok.eos_token_id], 0, "m", JsonlLog(
        eval_data / "answers.jsonl"))
    assert sorted(answers) == [(1, 0), (1, 1)]
    assert calls == [(length, 3), (length, 3)]  # the whole prompt, the budget cut to what the context leaves
    assert all(len(a["turns"]) == 1 and a["refused_turns"] == 1 for a in answers.values())


def test_answers_and_judgements_end_to_end_and_resume(llama_dir, eval_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    config = MtBenchConfig(max_new_tokens=6, samples=2,
                           judge={"base_url": "http://127.0.0.1:1/v1", "model": "scripted"})
    questions = mt_bench.load_questions(eval_data, None)
    prompts = mt_bench.load_judge_prompts(eval_data / "japanese_mt_bench" / "judge_prompts.jsonl")
    answers_log = JsonlLog(tmp_path / "answers.jsonl")
    answers = mt_bench.generate_answers(model, tok, questions, config, [tok.eos_token_id], 0, "model-a", answers_log)
    assert sorted(answers) == [(1, 0), (1, 1), (2, 0), (2, 1)] and all(len(a["turns"]) == 2 for a in answers.values())
    assert answers[2, 0]["turns"] == answers[2, 1]["turns"]  # math: greedy (FastChat's temperature 0)
    judge = ScriptedJudge()
    server = ChatServer(judge, model_name="scripted")
    with server.running() as url:
        client = mt_bench.ChatClient(url, max_retries=0)
        out = JsonlLog(tmp_path / "judgements.jsonl")
        judged = mt_bench.judge_answers(client, "scripted", questions, answers, prompts, config.judge, out)
        summary = mt_bench.summarize(judged, "scripted", samples=2)
        assert (summary["overall"], summary["turn1"], summary["turn2"], summary["rated"]) == (6.0, 8.0, 4.0, 8)
        assert summary["categories"] == {"math": 6.0, "writing": 6.0} and judge.calls == 8
        assert summary["overall_std"] == 0.0 and summary["per_sample"] == [6.0, 6.0]
        again = mt_bench.generate_answers(model, tok, questions, config, [tok.eos_token_id], 0, "model-a", answers_log)
        assert again == answers and len(answers_log.path.read_text().splitlines()) == 4  # nothing regenerated
        assert len(mt_bench.judge_answers(client, "scripted", questions, answers, prompts, config.judge, out)) == 8
        assert judge.calls == 8  # every judgement resumed
    records = [json.loads(line) for line in out.path.read_text().splitlines()]
    assert {r["judge_prompt"] for r in records if r["question_id"] == 2} == {"single-math-v1",
                                                                            "single-math-v1-multi-turn"}


def test_a_judge_that_is_down_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = JudgeConfig(base_url=url, model="gpt-4", max_retries=1, backoff_seconds=0.01)
    with pytest.raises(EndpointError) as info:
        with mt_bench.judge_endpoint(judge, tmp_path, "model"):
            pass
    assert len(info.value.lines()) == 1
    assert str(info.value).startswith(f"eval.mt_bench.judge: the judge at {url} does not answer: POST {url}/chat")


def test_a_served_judge_stops_with_the_block(llama_dir):
    before = set(threading.enumerate())
    with mt_bench.judge_endpoint(JudgeConfig(serve="self", max_tokens=4), llama_dir, "the-model") as (client, name):
        assert name == "the-model"
        assert client.complete(name, [{"role": "user", "content": "こんにちは"}], 0.0, 2) is not None
        port = int(client.base_url.rsplit(":", 1)[1].split("/")[0])
    assert set(threading.enumerate()) <= before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
