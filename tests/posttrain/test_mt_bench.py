"""Japanese MT-Bench: judge requests in FastChat's layout, ratings, scores by hand, answers from a tiny model,
judgements from a scripted judge behind the real loopback server, resume, and a judge that is down."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from factory.data.synth.client import EndpointError
from factory.data.synth.generate import JsonlLog
from factory.data.synth.server import ChatServer
from factory.posttrain import mt_bench
from factory.posttrain.benchmark_config import JudgeConfig, MtBenchConfig
from tests.posttrain.conftest import ScriptedJudge, free_port


def test_judge_requests_use_the_reference_where_the_category_has_one(eval_data):
    questions = mt_bench.load_questions(eval_data, None)
    prompts = mt_bench.load_judge_prompts(eval_data)
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
    rows = [("a", 1, 8.0), ("a", 2, 6.0), ("b", 1, 3.0), ("b", 2, None)]
    summary = mt_bench.summarize([{"category": c, "turn": t, "score": s} for c, t, s in rows], "judge-x")
    assert summary == {"judge_model": "judge-x", "judged": 4, "rated": 3, "overall": round(17 / 3, 3),
                       "turn1": 5.5, "turn2": 6.0, "categories": {"a": 7.0, "b": 3.0}}


def test_answers_and_judgements_end_to_end_and_resume(llama_dir, eval_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    config = MtBenchConfig(max_new_tokens=6, judge={"base_url": "http://127.0.0.1:1/v1", "model": "scripted"})
    questions = mt_bench.load_questions(eval_data, None)
    answers_log = JsonlLog(tmp_path / "answers.jsonl")
    answers = mt_bench.generate_answers(model, tok, questions, config, [tok.eos_token_id], 0, "model-a", answers_log)
    assert sorted(answers) == [1, 2] and all(len(a["turns"]) == 2 for a in answers.values())
    judge = ScriptedJudge()
    server = ChatServer(judge, model_name="scripted")
    with server.running() as url:
        client = mt_bench.ChatClient(url, max_retries=0)
        out = JsonlLog(tmp_path / "judgements.jsonl")
        judged = mt_bench.judge_answers(client, "scripted", questions, answers, mt_bench.load_judge_prompts(eval_data),
                                        config.judge, out)
        summary = mt_bench.summarize(judged, "scripted")
        assert (summary["overall"], summary["turn1"], summary["turn2"], summary["rated"]) == (6.0, 8.0, 4.0, 4)
        assert summary["categories"] == {"math": 6.0, "writing": 6.0} and judge.calls == 4
        again = mt_bench.generate_answers(model, tok, questions, config, [tok.eos_token_id], 0, "model-a", answers_log)
        assert again == answers and len(answers_log.path.read_text().splitlines()) == 2  # nothing regenerated
        assert len(mt_bench.judge_answers(client, "scripted", questions, answers,
                                          mt_bench.load_judge_prompts(eval_data), config.judge, out)) == 4
        assert judge.calls == 4  # every judgement resumed
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
