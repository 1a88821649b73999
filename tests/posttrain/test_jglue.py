"""JGLUE readers and scoring functions, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from factory.errors import DataError
from factory.posttrain import jglue
from tests.posttrain.conftest import write_jsonl


def test_readers_turn_the_local_files_into_the_rows_rakuten_jglue_serves(eval_data):
    jcqa = jglue.jcommonsenseqa_rows(eval_data / jglue.TASKS["jcommonsenseqa"].file("validation"))
    assert jcqa[0] == {"q_id": 0, "question": "田んぼが広がる風景を何という？",
                       **{f"choice{i}": c for i, c in enumerate(["畑", "海", "田園", "地方", "牧場"])}, "label": 2}
    assert [d["label"] for d in jglue.jnli_rows(eval_data / jglue.TASKS["jnli"].file("validation"))] == [2, 0, 2, 1]
    assert [d["label"] for d in jglue.jsts_rows(eval_data / jglue.TASKS["jsts"].file("validation"))] == [1, 2, 3, 4]
    squad = jglue.jsquad_rows(eval_data / jglue.TASKS["jsquad"].file("validation"))
    assert squad[0]["answers"]["text"] == ["小笠原諸島", "小笠原"] and squad[0]["context"].startswith("梅雨 [SEP]")
    assert [r["id"] for r in squad] == ["q0", "q1", "q2"] and squad[0]["title"] == "梅雨"


def test_bad_rows_name_the_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "jnli.json", [{"sentence1": "a", "sentence2": "b", "label": "entailment"},
                                              {"sentence1": "a", "sentence2": "b", "label": "maybe"}])
    with pytest.raises(DataError, match=rf"^{bad}:2: label 'maybe' is not one of entailment, contradiction, neutral$"):
        jglue.jnli_rows(bad)
    short = write_jsonl(tmp_path / "jcqa.json", [{"question": "q", "choice0": "a", "label": 0}])
    with pytest.raises(DataError, match=rf"^{short}:1: missing choice1, choice2, choice3, choice4"):
        jglue.jcommonsenseqa_rows(short)
    wrong = write_jsonl(tmp_path / "jcqa2.json", [{"question": "q", **{f"choice{i}": "a" for i in range(5)},
                                                   "label": 5}])
    with pytest.raises(DataError, match=rf"^{wrong}:1: label 5 is not a choice index 0-4$"):
        jglue.jcommonsenseqa_rows(wrong)


def test_correlations_and_expected_similarity_by_hand():
    pairs = [(1, 1), (3, 2), (2, 3), (4, 4)]  # deviations (-1.5, .5, -.5, 1.5) x (-1.5, -.5, .5, 1.5): 4 / 5
    assert jglue.pearson(pairs) == pytest.approx(0.8)
    assert jglue.spearman(pairs) == pytest.approx(0.8)
    assert jglue.spearman([(10, 1), (10, 2), (30, 3)]) == pytest.approx(math.sqrt(3) / 2)  # tied ranks 1.5, 1.5, 3
    assert math.isnan(jglue.pearson([(1, 1), (1, 2)]))
    even = [math.log(0.5), math.log(0.5)] + [-1e9] * 4
    assert jglue.sts_prediction(even) == pytest.approx(0.5)
    assert jglue.majority_share([2, 0, 2, 1]) == 0.5


def test_the_full_eval_data_folder_reads_whole(full_eval_data):
    counts = {name: len(spec.rows(full_eval_data / spec.file("validation"))) for name, spec in jglue.TASKS.items()}
    assert counts["jcommonsenseqa"] == 1119 and counts["jnli"] == 2434 and counts["jsts"] == 1457
    assert counts["jsquad"] > 4000
    train = full_eval_data / jglue.TASKS["jcommonsenseqa"].file("train")
    assert len(jglue.jcommonsenseqa_rows(train)) == 8939
