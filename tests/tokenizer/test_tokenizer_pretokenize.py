"""MeCab pretokenization: exact pieces, bunsetsu merging, parallel workers, training text."""

from __future__ import annotations

import pytest

from factory.errors import FactoryError
from tests.tokenizer.conftest import TRICKY, fixture_lines
from tokenizer.pretokenize import Segmenter, batches, parallel_training_text, write_training_text


@pytest.mark.parametrize("dictionary", ["unidic-lite", "ipadic"])
@pytest.mark.parametrize("granularity", ["morpheme", "bunsetsu"])
def test_pieces_concatenate_back_exactly(dictionary, granularity):
    seg = Segmenter(dictionary, granularity)
    for line in TRICKY + fixture_lines() + ["末尾の空白   ", "\t", "a\ue000b"]:
        pieces = seg.pieces(line)
        assert "".join(pieces) == line
        assert all(pieces)


def test_whitespace_stays_with_the_following_morpheme():
    assert Segmenter("unidic-lite", "morpheme").pieces("Hello  world\t日本語  ") == \
        ["Hello", "  world", "\t日本", "語", "  "]


@pytest.mark.parametrize("dictionary", ["unidic-lite", "ipadic"])
def test_bunsetsu_attaches_particles_auxiliaries_suffixes_and_prefixes(dictionary):
    text = "学生たちは、お茶を読みました。"
    assert Segmenter(dictionary, "bunsetsu").pieces(text) == ["学生たちは、", "お茶を", "読みました。"]
    assert len(Segmenter(dictionary, "morpheme").pieces(text)) >= 10


@pytest.mark.parametrize("dictionary", ["unidic-lite", "ipadic"])
def test_bunsetsu_keeps_compound_nouns_and_brackets_with_their_words(dictionary):
    assert Segmenter(dictionary, "bunsetsu").pieces("設定ファイルを編集する")[0] == "設定ファイルを"
    assert Segmenter(dictionary, "bunsetsu").pieces("「東京都庁」へ") == ["「東京都庁」へ"]


def test_two_workers_match_one_and_keep_order():
    lines = fixture_lines() * 3
    chunks = list(batches(lines, max_chars=500))
    assert len(chunks) > 4
    one = "".join(parallel_training_text(iter(chunks), "unidic-lite", "morpheme", workers=1))
    two = "".join(parallel_training_text(iter(chunks), "unidic-lite", "morpheme", workers=2))
    assert two == one
    assert one.replace("\n", "") == "".join(lines) and one.count("\n") > len(lines)


def test_training_text_has_a_piece_per_line_unless_granularity_none(tmp_path):
    lines = ["東京都に住む", "  spaced  out"]
    out = tmp_path / "train.txt"
    result = write_training_text(iter(lines), out, "unidic-lite", "morpheme", workers=1)
    assert out.read_text(encoding="utf-8") == "東京\n都\nに\n住む\n  spaced\n  out\n"
    assert (result.lines, result.chars) == (2, sum(map(len, lines)))
    write_training_text(iter(lines), out, "unidic-lite", "none", workers=1)
    assert out.read_text(encoding="utf-8") == "東京都に住む\n  spaced  out\n"


def test_a_worker_that_cannot_start_fails_the_run_instead_of_hanging():
    with pytest.raises(FactoryError, match="pretokenize: a MeCab worker process died"):
        list(parallel_training_text(iter([["テスト"]] * 8), "no-such-dictionary", "morpheme", workers=2))
