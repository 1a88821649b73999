"""JGLUE readers and scoring functions, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from factory.errors import DataError
from factory.posttrain import jglue
from tests.posttrain.conftest import write_jsonl


def test_readers_turn_rows_into_documents(eval_data):
    jcqa = jglue.read_jcommonsenseqa(eval_data / jglue.TASKS["jcommonsenseqa"].file)
    assert jcqa[0] == {"question": "田んぼが広がる風景を何という？", "choices": ["畑", "海", "田園", "地方", "牧場"], "label": 2}
    assert [d["label"] for d in jglue.read_jnli(eval_data / jglue.TASKS["jnli"].file)] == [2, 0, 2, 1]
    sts = jglue.read_jsts(eval_data / jglue.TASKS["jsts"].file)
    assert [(d["score"], d["label"]) for d in sts] == [(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4)]
    squad = jglue.read_jsquad(eval_data / jglue.TASKS["jsquad"].file)
    assert squad[0]["answers"] == ["小笠原諸島", "小笠原"] and not squad[0]["context"].startswith("梅雨 [SEP]")


def test_bad_rows_name_the_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "jnli.json", [{"sentence1": "a", "sentence2": "b", "label": "entailment"},
                                              {"sentence1": "a", "sentence2": "b", "label": "maybe"}])
    with pytest.raises(DataError, match=rf"^{bad}:2: label 'maybe' is not one of entailment, contradiction, neutral$"):
        jglue.read_jnli(bad)
    short = write_jsonl(tmp_path / "jcqa.json", [{"question": "q", "choice0": "a", "label": 0}])
    with pytest.raises(DataError, match=rf"^{short}:1: missing choice1, choice2, choice3, choice4"):
        jglue.read_jcommonsenseqa(short)


def test_character_f1_and_exact_match_by_hand():
    assert jglue.char_f1("雨季です", "雨季") == pytest.approx(2 / 3)  # precision 2/4, recall 2/2
    assert jglue.char_f1("北アメリカ", "東アジア") == pytest.approx(2 * (1 / 5) * (1 / 4) / (1 / 5 + 1 / 4))
    assert jglue.char_f1("東京", "大阪") == 0.0
    doc = {"answers": ["小笠原諸島", "小笠原"]}
    assert jglue.squad_results(doc, [" 小笠原 "]) == {"exact_match": 1.0, "f1": 1.0}  # the best of the golds
    assert jglue.squad_results(doc, ["小笠原諸島を除く"])["exact_match"] == 0.0


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
    counts = {name: len(spec.read(full_eval_data / spec.file)) for name, spec in jglue.TASKS.items()}
    assert counts["jcommonsenseqa"] == 1119 and counts["jnli"] == 2434 and counts["jsts"] == 1457
    assert counts["jsquad"] > 4000
