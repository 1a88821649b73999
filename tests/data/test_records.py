"""Streamed readers: JSONL, parquet, plain text, HF datasets folders; malformed records and the error budget."""

from __future__ import annotations

import json

import pytest

from factory.data.records import ErrorBudget, Record, iter_records
from factory.errors import DataError


def test_jsonl_reads_the_configured_field_and_reports_malformed_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"body": "一つ目"}\n\n{"body": 3}\nnot json\n["list"]\n{"other": "x"}\n{"body": "最後"}\n',
                    encoding="utf-8")
    recs = list(iter_records(path, text_field="body"))
    assert [(r.source, r.text) for r in recs if not r.error] == [(f"{path}:1", "一つ目"), (f"{path}:7", "最後")]
    errors = {r.source.rsplit(":", 1)[1]: r.error for r in recs if r.error}
    assert errors["3"] == "'body' is int, expected a string"
    assert errors["4"].startswith("invalid JSON")
    assert errors["5"] == "expected a JSON object, got list"
    assert errors["6"].startswith("no 'body' field")


def test_plain_text_splits_paragraphs_or_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("第一段落の一行目\n二行目\n\n\n第二段落\n", encoding="utf-8")
    assert [(r.source, r.text) for r in iter_records(path)] == [
        (f"{path}:1", "第一段落の一行目\n二行目"), (f"{path}:5", "第二段落")]
    assert [r.text for r in iter_records(path, text_unit="line")] == ["第一段落の一行目", "二行目", "第二段落"]


def test_parquet_rows_stream_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"content": ["あ", None, "い"]}), path)
    recs = list(iter_records(path, text_field="content"))
    assert [(r.source, r.text, bool(r.error)) for r in recs] == [
        (f"{path}#0", "あ", False), (f"{path}#1", "None", True), (f"{path}#2", "い", False)]
    with pytest.raises(DataError, match=r"no 'text' column \(columns: content\)"):
        list(iter_records(path))


def test_hf_datasets_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["東京", "大阪"]}).save_to_disk(str(tmp_path / "ds"))
    assert [(r.source, r.text) for r in iter_records(tmp_path / "ds")] == [
        (f"{tmp_path / 'ds'}#0", "東京"), (f"{tmp_path / 'ds'}#1", "大阪")]


def test_unknown_suffix_and_missing_file_are_one_line_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        iter_records(tmp_path / "x.csv")
    with pytest.raises(DataError, match="input not found"):
        iter_records(tmp_path / "nope.jsonl")


def test_error_budget_fails_above_the_rate_naming_the_first_bad_line(tmp_path, caplog):
    budget = ErrorBudget(tmp_path / "in.jsonl", max_rate=0.2, report=1)
    for i in range(8):
        budget.count(Record(f"in.jsonl:{i + 1}", "{", "invalid JSON" if i in (2, 5) else ""))
    assert [r.getMessage() for r in caplog.records] == ["malformed record in.jsonl:3: invalid JSON"]
    with pytest.raises(DataError) as e:
        budget.check()
    assert str(e.value) == (f"{tmp_path / 'in.jsonl'}: 2 of 8 records malformed (25.0% > data.max_error_rate "
                            "20.0%); first: in.jsonl:3: invalid JSON")
    budget.max_rate = 0.25
    budget.check()


def test_jsonl_reader_is_usable_on_its_own(tmp_path):
    path = tmp_path / "kept.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ["甲", "乙"]),
                    encoding="utf-8")
    assert [r.text for r in iter_records(path)] == ["甲", "乙"]
