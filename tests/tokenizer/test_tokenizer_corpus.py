"""Corpus inputs: text, JSONL and datasets folders, malformed input errors, sampling and held-out split."""

from __future__ import annotations

import gzip
import json

import pytest

from factory.errors import DataError
from tokenizer.corpus import Sampler, input_bytes, input_kind, iter_lines


def test_reads_txt_jsonl_gz_and_datasets_folder(tmp_path):
    import datasets

    (tmp_path / "a.txt").write_text("一行目\n\n  二行目  \n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "doc1 line1\ndoc1 line2"}) + "\n\n"
                                      + json.dumps({"text": "文書2", "id": 2}) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "c.txt.gz", "wt", encoding="utf-8") as f:
        f.write("圧縮\n")
    datasets.Dataset.from_dict({"body": ["ds one", "ds two\nds three"]}).save_to_disk(str(tmp_path / "ds"))
    paths = [tmp_path / n for n in ("a.txt", "b.jsonl", "c.txt.gz")]
    assert list(iter_lines(paths, "text")) == ["一行目", "  二行目  ", "doc1 line1", "doc1 line2", "文書2", "圧縮"]
    assert list(iter_lines([tmp_path / "ds"], "body")) == ["ds one", "ds two", "ds three"]
    assert [input_kind(p) for p in [*paths, tmp_path / "ds", tmp_path / "x.csv"]] == \
        ["txt", "jsonl", "txt", "dataset", None]
    assert input_bytes([tmp_path / "ds"]) > 0
    assert input_bytes([tmp_path / "c.txt.gz"]) == len("圧縮\n".encode()), "gzip counts its text, not its size"


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": broken}\n', "b.jsonl:2: invalid JSON"),
    ('{"text": "ok"}\n{"body": "x"}\n', "b.jsonl:2: no 'text' field \\(keys: body\\)"),
    ('["not", "an", "object"]\n', "b.jsonl:1: expected a JSON object"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, content, message):
    (tmp_path / "b.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(iter_lines([tmp_path / "b.jsonl"], "text"))


def test_non_utf8_text_names_file_and_line(tmp_path):
    (tmp_path / "a.txt").write_bytes("正しい行\n".encode() + "シフトJIS".encode("shift_jis") + b"\n")
    with pytest.raises(DataError, match=r"a.txt:2: not UTF-8"):
        list(iter_lines([tmp_path / "a.txt"], "text"))


def test_datasets_folder_without_the_column(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=r"ds: no 'text' column \(columns: body\)"):
        list(iter_lines([tmp_path / "ds"], "text"))


def _lines(n: int) -> list[str]:
    return [f"line {i:05d} テキスト" for i in range(n)]


def test_sampler_splits_disjointly_and_deterministically():
    lines = _lines(5000)
    a = Sampler(0.1, 10**9, None, 0, seed=7)
    train = list(a.train_lines_of(lines))
    assert set(train).isdisjoint(a.heldout)
    assert len(train) + len(a.heldout) == len(lines)
    assert 400 < len(a.heldout) < 600
    b = Sampler(0.1, 10**9, None, 0, seed=7)
    assert list(b.train_lines_of(lines)) == train and b.heldout == a.heldout


def test_sampler_spreads_a_byte_budget_over_the_whole_input():
    lines = _lines(10000)
    total = sum(len(line.encode()) + 1 for line in lines)
    s = Sampler(0.0, 10**9, train_budget=total // 10, total_bytes=total, seed=0)
    train = list(s.train_lines_of(lines))
    assert s.train_bytes <= total // 10
    assert 0.8 * (total // 10) < s.train_bytes
    assert train[-1] > "line 09000", "the sample must reach the end of the input, not stop at its head"


def test_sampler_caps_heldout_bytes():
    s = Sampler(0.5, heldout_max_bytes=1000, train_budget=None, total_bytes=0, seed=0)
    list(s.train_lines_of(_lines(1000)))
    assert 0 < s.heldout_bytes <= 1000
    assert s.summary()["heldout_lines"] == len(s.heldout)


def test_a_gzip_input_cut_short_or_not_gzip_is_one_line_naming_it(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    data = gzip.compress("".join(f"日本語の文です。{i * 7919 % 100003}\n" for i in range(2000)).encode())
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=rf"^{path}: unreadable after line \d+ \(Compressed file ended"):
        list(iter_lines([path], "text"))
    path.write_bytes("日本語の文です。\n".encode())
    with pytest.raises(DataError, match=rf"^{path}: cannot be read \(Not a gzipped file"):
        input_bytes([path])
