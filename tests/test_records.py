"""The records reader: JSONL, parquet, plain text, HF datasets folders; malformed records and the error budget."""

from __future__ import annotations

import json

import pytest

from factory.records import ErrorBudget, Record, read_records
from factory.errors import DataError


def test_jsonl_reads_the_configured_field_and_reports_malformed_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"body": "一つ目"}\n\n{"body": 3}\nnot json\n["list"]\n{"other": "x"}\n{"body": "最後"}\n',
                    encoding="utf-8")
    recs = list(read_records(path, text_field="body", errors="yield"))
    assert [(r.source, r.text) for r in recs if not r.error] == [(f"{path}:1", "一つ目"), (f"{path}:7", "最後")]
    errors = {r.source.rsplit(":", 1)[1]: r.error for r in recs if r.error}
    assert errors["3"] == "'body' is int, expected a string"
    assert errors["4"].startswith("invalid JSON")
    assert errors["5"] == "expected a JSON object, got list"
    assert errors["6"].startswith("no 'body' field")


def test_plain_text_splits_paragraphs_or_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("第一段落の一行目\n二行目\n\n\n第二段落\n", encoding="utf-8")
    assert [(r.source, r.text) for r in read_records(path)] == [
        (f"{path}:1", "第一段落の一行目\n二行目"), (f"{path}:5", "第二段落")]
    assert [r.text for r in read_records(path, text_unit="line")] == ["第一段落の一行目", "二行目", "第二段落"]


def test_parquet_rows_stream_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"content": ["あ", None, "い"]}), path)
    recs = list(read_records(path, text_field="content", errors="yield"))
    assert [(r.source, r.text, bool(r.error)) for r in recs] == [
        (f"{path}#0", "あ", False), (f"{path}#1", "None", True), (f"{path}#2", "い", False)]
    with pytest.raises(DataError, match=r"no 'text' column \(columns: content\)"):
        list(read_records(path))


def test_hf_datasets_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["東京", "大阪"]}).save_to_disk(str(tmp_path / "ds"))
    assert [(r.source, r.text) for r in read_records(tmp_path / "ds")] == [
        (f"{tmp_path / 'ds'}#0", "東京"), (f"{tmp_path / 'ds'}#1", "大阪")]


def test_unknown_suffix_and_missing_file_are_one_line_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_records(tmp_path / "x.csv")
    with pytest.raises(DataError, match="input not found"):
        read_records(tmp_path / "nope.jsonl")


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
    assert [r.text for r in read_records(path)] == ["甲", "乙"]


def test_raise_policy_names_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n{"text": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: 'text' is int, expected a string$"):
        list(read_records(path))


def test_invalid_utf8_is_a_malformed_record_not_replaced(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    recs = list(read_records(path, errors="yield"))
    assert [(r.text, r.reason) for r in recs] == [("ok", ""), (None, "encoding")]
    assert recs[1].source == f"{path}:2" and recs[1].error.startswith("not UTF-8")
    text = tmp_path / "in.txt"
    text.write_bytes(b"good\n\xe3\x81\n")
    assert [r.reason for r in read_records(text, text_unit="line", errors="yield")] == ["", "encoding"]


def test_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n{"itera', encoding="utf-8")
    assert [r.data["iteration"] for r in read_records(path, text_field=None)] == [1, 2]
    assert any("last line is incomplete" in r.getMessage() for r in caplog.records)
    path.write_text('{"iteration": 1}\n{"itera\n', encoding="utf-8")  # complete line: malformed, not torn
    with pytest.raises(DataError, match=":2: invalid JSON"):
        list(read_records(path, text_field=None))


def test_records_keep_every_field_and_the_id(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "doc-7", "text": "本文", "url": "https://example.org", "meta": {"a": 1}},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    rec, = read_records(path)
    assert rec.id == "doc-7" and rec.data["url"] == "https://example.org" and rec.data["meta"] == {"a": 1}


def test_gzip_jsonl_and_hf_split(tmp_path):
    import gzip

    import datasets

    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"text": "圧縮"}\n')
    assert [r.text for r in read_records(path)] == ["圧縮"]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["訓練"]}),
                          "test": datasets.Dataset.from_dict({"text": ["試験"]})}).save_to_disk(str(tmp_path / "dd"))
    assert [r.text for r in read_records(tmp_path / "dd")] == ["試験", "訓練"]
    assert [r.text for r in read_records(tmp_path / "dd", split="train")] == ["訓練"]
    with pytest.raises(DataError, match="no split 'valid'"):
        list(read_records(tmp_path / "dd", split="valid"))


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    import gzip

    body = '{"text": "一行目"}\n{"text": "二行目"}\n'
    for name, write in (("in.jsonl", lambda p, b: p.write_bytes(b)), ("in.jsonl.gz", lambda p, b: p.write_bytes(
            gzip.compress(b)))):
        path = tmp_path / name
        write(path, b"\xef\xbb\xbf" + body.encode("utf-8"))
        assert [(r.source, r.text) for r in read_records(path)] == [(f"{path}:1", "一行目"), (f"{path}:2", "二行目")]
    text = tmp_path / "in.txt"
    text.write_bytes(b"\xef\xbb\xbf" + "本文\n".encode("utf-8"))
    assert [r.text for r in read_records(text)] == ["本文"]


@pytest.mark.parametrize(("line", "why"), [
    ('{"text": "a", "text": "b"}', "key 'text' given twice"),
    ('{"text": "a", "meta": {"k": 1, "k": 2}}', "key 'k' given twice"),
    ('{"text": "a", "score": NaN}', "NaN is not a JSON number"),
    ('{"text": "a", "score": -Infinity}', "-Infinity is not a JSON number"),
], ids=["repeated-key", "repeated-nested-key", "nan", "infinity"])
def test_repeated_keys_and_nan_are_malformed_records_not_dropped_values(tmp_path, line, why):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
    recs = list(read_records(path, errors="yield"))
    assert [r.reason for r in recs] == ["", "json"] and why in recs[1].error, recs[1].error
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON \(.*{why}"):
        list(read_records(path))


def _cut(path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_a_compressed_file_cut_short_is_one_line_naming_the_file_and_the_last_line_read(tmp_path):
    import gzip

    lines = "".join(json.dumps({"text": f"文書{i}" * 40}, ensure_ascii=False) + "\n" for i in range(2000))
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(lines.encode("utf-8")))
    _cut(path, 0.5)
    for errors in ("raise", "yield"):  # unreadable is never a record to count: its records are unknown
        with pytest.raises(DataError, match=rf"^{path}: unreadable after line \d+ \(Compressed file ended"):
            list(read_records(path, errors=errors))
    (tmp_path / "plain.txt.gz").write_bytes(b"not gzip at all\n")
    with pytest.raises(DataError, match=r"plain.txt.gz: cannot be read \(Not a gzipped file"):
        list(read_records(tmp_path / "plain.txt.gz"))


def test_damaged_parquet_and_datasets_folders_are_one_line(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"東京{i}" * 30 for i in range(3000)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=500)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)  # a damaged row group; the footer is intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^{path}: unreadable after \d+ rows"):
        list(read_records(path))
    _cut(path, 0.5)
    with pytest.raises(DataError, match=rf"^{path}: not a readable parquet file"):
        list(read_records(path))
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    _cut(next((tmp_path / "ds").glob("*.arrow")), 0.5)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'ds'}: not a readable datasets folder"):
        list(read_records(tmp_path / "ds"))
