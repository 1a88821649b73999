"""Japanese MT-Bench: N two-turn answers per question with the model's chat template (FastChat's temperature
per category), single-answer grading by an LLM judge with FastChat's judge prompts or another set in their
layout (reference answers for math, reasoning and coding), scores per category with their spread over the N.

Prompts are never cut: a turn whose prompt does not fit the context is refused and counted. Answers and
judgements are appended one record at a time to JSONL files; a rerun skips every record id already there
(ids hash the question, the sample, the model, the settings, the judge and its prompt).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from factory.endpoints.client import ChatClient, EndpointError, bounded_map
from factory.endpoints.server import ChatServer, HFBackend
from factory.errors import DataError
from factory.jsonl_log import JsonlLog, record_id
from factory.posttrain.benchmark_config import JudgeConfig, MtBenchConfig

if TYPE_CHECKING:  # for annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
FOLDER = "japanese_mt_bench"
NEED_REFERENCE = ("math", "reasoning", "coding")
"""Categories graded against GPT-4's reference answers (FastChat's NEED_REF_CATS)."""
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
               "stem": 0.1, "humanities": 0.1}
"""FastChat's sampling temperature per category (0: greedy)."""
JUDGE_PROMPTS = ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


@dataclass(frozen=True)
class Question:
    id: int
    category: str
    turns: list[str]
    reference: list[str] | None
    """Reference answers per turn, for the categories that are graded against them."""


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: not found (Japanese MT-Bench files expected in the eval data folder)")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    return rows


def load_questions(data_dir: Path, questions: int | list[int] | None) -> list[Question]:
    """The first N questions, or those with the listed ids, with reference answers where their category is
    graded against one."""
    folder = data_dir / FOLDER
    refs = {r["question_id"]: r["choices"][0]["turns"] for r in _rows(folder / "reference_answer_gpt-4.jsonl")}
    rows = _rows(folder / "question.jsonl")
    if isinstance(questions, list):
        by_id = {r["question_id"]: r for r in rows}
        unknown = [q for q in questions if q not in by_id]
        if unknown:
            raise DataError(f"eval.mt_bench.questions: no question {', '.join(map(str, unknown))} in "
                            f"{folder / 'question.jsonl'} (ids {min(by_id)}-{max(by_id)})")
        rows = [by_id[q] for q in questions]
    else:
        rows = rows[:questions]
    out = []
    for row in rows:
        qid, category = row["question_id"], row["category"]
        if len(row.get("turns", [])) != 2:
            raise DataError(f"{folder / 'question.jsonl'}: question {qid} does not have two turns")
        if category in NEED_REFERENCE and qid not in refs:
            raise DataError(f"{folder / 'reference_answer_gpt-4.jsonl'}: no reference answer for question {qid}")
        out.append(Question(qid, category, row["turns"], refs.get(qid) if category in NEED_REFERENCE else None))
    return out


def judge_prompts_file(data_dir: Path, judge: JudgeConfig) -> Path:
    """The judge prompts file: `judge.prompts` (e.g. the Japanese fork's), else FastChat's in the data folder."""
    return judge.prompts or data_dir / FOLDER / "judge_prompts.jsonl"


def load_judge_prompts(path: Path) -> dict[str, dict[str, str]]:
    """Single-answer grading prompts by name (FastChat's layout); the four the benchmark uses must be there, each
    with a system prompt and a template."""
    prompts = {r.get("name"): r for r in _rows(path)}
    missing = [n for n in JUDGE_PROMPTS if n not in prompts]
    if missing:
        raise DataError(f"{path}: missing judge prompts {', '.join(missing)} (FastChat's names are expected)")
    broken = [n for n in JUDGE_PROMPTS if not all(isinstance(prompts[n].get(k), str)
                                                   for k in ("system_prompt", "prompt_template"))]
    if broken:
        raise DataError(f"{path}: judge prompt {broken[0]} needs a string system_prompt and prompt_template")
    return prompts


def judge_prompt_name(question: Question, turn: int) -> str:
    return ("single-math-v1" if question.reference else "single-v1") + ("-multi-turn" if turn == 2 else "")


def judge_messages(prompt: dict[str, str], question: Question, answers: list[str], turn: int) -> list[dict[str, str]]:
    """FastChat's single-answer judgement request for `turn` (1 or 2) of `question`."""
    ref = question.reference or ["", ""]
    if turn == 1:
        fields = {"question": question.turns[0], "answer": answers[0], "ref_answer_1": ref[0]}
    else:
        fields = {"question_1": question.turns[0], "question_2": question.turns[1], "answer_1": answers[0],
                  "answer_2": answers[1], "ref_answer_1": ref[0], "ref_answer_2": ref[1]}
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)}]


def parse_rating(judgement: str) -> float | None:
    """The `[[rating]]` a judgement ends with (FastChat also accepts `[rating]`); None when it gave none."""
    match = _RATING.search(judgement) or _RATING_BACKUP.search(judgement)
    return float(match.group(1)) if match else None


@torch.no_grad()
def _reply(model, tok, messages: list[dict[str, str]], max_new_tokens: int, temperature: float,
           stop_ids: list[int]) -> str | None:
    """The answer to the conversation, its prompt kept whole (FastChat never cuts one): the token budget shrinks
    to what the context leaves; None when the prompt alone fills the context."""
    encoded = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = encoded["input_ids"].to(model.device)
    context = getattr(model.config, "max_position_embeddings", None)
    new = max_new_tokens if context is None else min(max_new_tokens, context - ids.shape[1])
    if new < 1:
        return None
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 1e-4 else {"do_sample": False}
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, eos_token_id=stop_ids,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0], **sampling)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


ANSWER_FIELDS = {"question_id": int, "sample": int, "category": str, "turns": list}
JUDGEMENT_FIELDS = {"question_id": int, "sample": int, "category": str, "turn": int, "judgement": str,
                    "score": (int, float, type(None))}
"""What the summary reads from each answer and judgement; a record without them is redone."""


def generate_answers(model: PreTrainedModel, tok: PreTrainedTokenizerBase, questions: list[Question],
                     mt: MtBenchConfig, stop_ids: list[int], seed: int, model_key: str,
                     answers: JsonlLog) -> dict[tuple[int, int], dict[str, Any]]:
    """`mt.samples` two-turn answers per question (the second turn sees the first answer), resumed from `answers`,
    by (question id, sample). A turn whose prompt does not fit the context is refused, and so is every turn after it."""
    ids = {(q.id, k): record_id("mt_bench_answer", q.id, model_key, mt.max_new_tokens, seed, k)
           for q in questions for k in range(mt.samples)}
    done = answers.done_ids()
    todo = [(q, k) for q in questions for k in range(mt.samples) if ids[q.id, k] not in done]
    log.info("eval: MT-Bench: %d answers (%d questions x %d samples; %d already in %s)", len(todo), len(questions),
             mt.samples, len(ids) - len(todo), answers.path)
    for q, k in todo:
        torch.manual_seed(seed + q.id + 100_003 * k)  # per answer, so a resumed run samples what a whole run would
        temperature, messages, turns = TEMPERATURE.get(q.category, 0.7), [], []
        for text in q.turns:
            messages.append({"role": "user", "content": text})
            reply = _reply(model, tok, messages, mt.max_new_tokens, temperature, stop_ids)
            if reply is None:
                break
            turns.append(reply)
            messages.append({"role": "assistant", "content": reply})
        answers.append({"id": ids[q.id, k], "question_id": q.id, "sample": k, "category": q.category, "turns": turns,
                        "refused_turns": len(q.turns) - len(turns)})
    wanted = set(ids.values())
    return {(r["question_id"], r["sample"]): r for r in answers.records() if r["id"] in wanted}


def judge_answers(client: ChatClient, judge_model: str, questions: list[Question],
                  answers: dict[tuple[int, int], dict[str, Any]], prompts: dict[str, dict[str, str]],
                  judge: JudgeConfig, out: JsonlLog) -> list[dict[str, Any]]:
    """One judgement per answered turn, resumed from `out` (ids hash the answer, the judge and its prompt text);
    returns this run's judgements."""
    def job(answer: dict[str, Any], q: Question, turn: int) -> str:
        prompt = prompts[judge_prompt_name(q, turn)]
        return record_id(answer["id"], turn, judge_model, prompt["system_prompt"], prompt["prompt_template"])

    by_id = {q.id: q for q in questions}
    jobs = {job(answer, by_id[qid], turn): (by_id[qid], answer, turn) for (qid, _), answer in answers.items()
            for turn in range(1, len(answer["turns"]) + 1)}
    done = out.done_ids()
    todo = [j for j in jobs if j not in done]
    log.info("eval: MT-Bench: %d judgements by %s (%d already in %s)", len(todo), judge_model, len(jobs) - len(todo),
             out.path)

    def call(job_id: str) -> str:
        q, answer, turn = jobs[job_id]
        messages = judge_messages(prompts[judge_prompt_name(q, turn)], q, answer["turns"], turn)
        return client.complete(judge_model, messages, 0.0, judge.max_tokens)

    for job_id, judgement in bounded_map(call, todo, judge.concurrency):
        q, answer, turn = jobs[job_id]
        out.append({"id": job_id, "question_id": q.id, "sample": answer["sample"], "category": q.category,
                    "turn": turn, "judge_model": judge_model, "judge_prompt": judge_prompt_name(q, turn),
                    "judgement": judgement, "score": parse_rating(judgement)})
    return [r for r in out.records() if r["id"] in jobs]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(judgements: list[dict[str, Any]], judge_model: str, samples: int = 1,
              refused_turns: int = 0) -> dict[str, Any]:
    """Mean rating overall, per turn and per category over the judgements that gave one (as FastChat), the
    overall mean of each sample, and their spread: the standard deviation across samples (None for one)."""
    rated = [j for j in judgements if j["score"] is not None]

    def mean(keep: Callable[[dict[str, Any]], bool]) -> float | None:
        return _mean([r["score"] for r in rated if keep(r)])

    per_sample = [mean(lambda r, k=k: r["sample"] == k) for k in range(samples)]
    known = [m for m in per_sample if m is not None]
    spread = statistics.stdev(known) if len(known) == samples > 1 else None
    categories = sorted({j["category"] for j in judgements})
    return {"judge_model": judge_model, "samples": samples, "judged": len(judgements), "rated": len(rated),
            "refused_turns": refused_turns, "overall": _rounded(mean(lambda r: True)), "overall_std": _rounded(spread),
            "per_sample": [_rounded(m) for m in per_sample], "turn1": _rounded(mean(lambda r: r["turn"] == 1)),
            "turn2": _rounded(mean(lambda r: r["turn"] == 2)),
            "categories": {c: _rounded(mean(lambda r, c=c: r["category"] == c)) for c in categories}}


@contextlib.contextmanager
def judge_endpoint(judge: JudgeConfig, model_folder: Path, model_name: str) -> Iterator[tuple[ChatClient, str]]:
    """A client for the judge and the judge model's name, checked with a one-token request first.

    `serve` starts a loopback server on a local HF folder (`self`: the model under test) that stops when the
    block ends; otherwise `base_url` is used as is.
    """
    key = os.environ.get(judge.api_key_env) if judge.api_key_env else None
    with contextlib.ExitStack() as stack:
        if judge.serve is not None:
            folder = model_folder if judge.serve == "self" else Path(judge.serve)
            name = judge.model or (model_name if judge.serve == "self" else str(folder))
            server = ChatServer(HFBackend(folder, judge.max_tokens), port=0, model_name=name)
            base_url = stack.enter_context(server.running())
        else:
            base_url, name = judge.base_url, judge.model
        client = ChatClient(base_url, api_key=key, timeout=judge.timeout_seconds, max_retries=judge.max_retries,
                            backoff=judge.backoff_seconds)
        try:
            client.complete(name, [{"role": "user", "content": "OK"}], 0.0, 1)
        except EndpointError as e:
            raise EndpointError(f"eval.mt_bench.judge: the judge at {base_url} does not answer: {e}") from None
        yield client, name
