"""The file table against its readers: every file the eval stage reads is a required, pinned entry; and the
demo's rows shipped in configs/demo-data/eval are unchanged excerpts of the table's files that cover exactly
what configs/demo-cpu.yaml scores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from factory.config import load_config
from factory.evaldata.table import FASTCHAT, FILES, JGLUE, url
from factory.posttrain import mt_bench
from factory.posttrain.jglue import TASKS

DEMO = Path("configs/demo-data/eval")
MT_FILES = ("question.jsonl", "reference_answer_gpt-4.jsonl", "judge_prompts.jsonl")
BY_LOCAL = {e.local: e for e in FILES}


def test_every_file_the_eval_stage_reads_is_a_pinned_entry_the_train_splits_optional():
    read = [spec.file("validation") for spec in TASKS.values()] + [f"{mt_bench.FOLDER}/{name}" for name in MT_FILES]
    assert all(BY_LOCAL[name].required and BY_LOCAL[name].sha256 for name in read)
    assert all(not BY_LOCAL[spec.file("train")].required for spec in TASKS.values())
    assert len(BY_LOCAL) == len(FILES) and {e.local for e in FILES if e.upstream == "LICENSE"} == {
        "jglue/LICENSE", "japanese_mt_bench/LICENSE"}
    assert [e.local for e in FILES if e.sha256 is None] == ["jglue/jnli-train-v1.3.json", "jglue/jsquad-train-v1.3.json"]
    assert url("https://raw.githubusercontent.com", BY_LOCAL["japanese_mt_bench/reference_answer_gpt-4.jsonl"]) == (
        "https://raw.githubusercontent.com/lm-sys/FastChat/3e0e7f15f05ad933691bf0afd49c5eb5b58999b0/fastchat/"
        "llm_judge/data/japanese_mt_bench/reference_answer/gpt-4.jsonl")
    assert (JGLUE.commit[:7], FASTCHAT.commit[:7]) == ("6f071c0", "3e0e7f1")


def test_the_demo_rows_cover_what_the_demo_config_scores():
    ec = load_config("configs/demo-cpu.yaml").eval
    assert ec.data_dir == DEMO and ec.harness.num_fewshot == 1
    for task in ec.harness.tasks:
        assert len(TASKS[task].rows(DEMO / TASKS[task].file("validation"))) == ec.harness.limit
    shots = [TASKS[t].file("train") for t in ec.harness.tasks if (DEMO / TASKS[t].file("train")).is_file()]
    assert shots == ["jglue/jcommonsenseqa-train-v1.3.json"]
    questions = mt_bench.load_questions(DEMO, ec.mt_bench.questions)
    assert [q.id for q in questions] == ec.mt_bench.questions == [31, 61, 71]
    assert [q.category for q in questions if q.reference] == ["math"]
    assert mt_bench.load_judge_prompts(DEMO / mt_bench.FOLDER / "judge_prompts.jsonl")
    whole = [p.relative_to(DEMO).as_posix() for p in DEMO.rglob("*") if p.is_file()]
    assert sorted(whole) == sorted(["README.md"] + [TASKS[t].file("validation") for t in ec.harness.tasks] + shots
                                   + [f"{mt_bench.FOLDER}/{name}" for name in (*MT_FILES, "LICENSE")] + ["jglue/LICENSE"])


def test_the_demo_licences_and_judge_prompts_are_the_upstream_files():
    for name in ("jglue/LICENSE", "japanese_mt_bench/LICENSE", "japanese_mt_bench/judge_prompts.jsonl"):
        assert hashlib.sha256((DEMO / name).read_bytes()).hexdigest() == BY_LOCAL[name].sha256, name


def test_the_demo_rows_are_unchanged_lines_of_the_full_files(full_eval_data):
    for name in ("jglue/jcommonsenseqa-valid-v1.3.json", "jglue/jcommonsenseqa-train-v1.3.json",
                 "jglue/jnli-valid-v1.3.json"):
        demo = (DEMO / name).read_bytes().splitlines(keepends=True)
        assert demo == (full_eval_data / name).read_bytes().splitlines(keepends=True)[:len(demo)], name
    for name in ("question.jsonl", "reference_answer_gpt-4.jsonl"):
        lines = (full_eval_data / mt_bench.FOLDER / name).read_bytes().splitlines(keepends=True)
        wanted = [line for line in lines if json.loads(line)["question_id"] in (31, 61, 71)]
        assert (DEMO / mt_bench.FOLDER / name).read_bytes().splitlines(keepends=True) == wanted, name
