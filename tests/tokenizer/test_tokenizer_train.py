"""SentencePiece training: Tanuki's options and one-line errors that give the feasible vocabulary size."""

from __future__ import annotations

import re

import pytest
import sentencepiece as spm

from factory.errors import ConfigError
from tests.tokenizer.conftest import fixture_lines
from tokenizer.config import TokenizerConfig
from tokenizer.pretokenize import write_training_text
from tokenizer.train import explain, train, trainer_args


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "train.txt"
    write_training_text(iter(fixture_lines()), path, "unidic-lite", "morpheme", workers=1)
    return path


def _error(tc: TokenizerConfig, text, prefix) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        train(tc, text, prefix)
    assert len(info.value.lines()) == 1
    return info.value


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_too_large_vocab_gives_the_largest_size_that_trains(text, tmp_path, model_type):
    tc = TokenizerConfig(vocab_size=100_000, model_type=model_type)
    err = _error(tc, text, tmp_path / "m")
    largest = int(re.search(r"supports at most (\d+) pieces", str(err)).group(1))
    assert f"set tokenizer.vocab_size<={largest}" in str(err)
    train(tc.model_copy(update={"vocab_size": largest}), text, tmp_path / "m")
    assert spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model")).vocab_size() == largest


def test_too_small_vocab_gives_the_smallest_size_that_trains(text, tmp_path):
    tc = TokenizerConfig(vocab_size=300)
    err = _error(tc, text, tmp_path / "m")
    smallest = int(re.search(r"needs at least (\d+) pieces", str(err)).group(1))
    assert "tokenizer.character_coverage" in str(err)
    train(tc.model_copy(update={"vocab_size": smallest}), text, tmp_path / "m")


def test_trainer_args_keep_exact_round_trip_and_need_no_delimiter(tmp_path):
    args = trainer_args(TokenizerConfig(), tmp_path / "t", tmp_path / "m")
    assert args["normalization_rule_name"] == "identity"
    assert not args["add_dummy_prefix"] and not args["remove_extra_whitespaces"]
    assert "pretokenization_delimiter" not in args  # pretokenized text holds one piece per line
    assert args["user_defined_symbols"] == ["<EOD>", "<|im_start|>", "<|im_end|>", "\n"]


def test_unrecognized_sentencepiece_errors_keep_their_first_line():
    err = explain("INTERNAL: something odd\nmore detail", TokenizerConfig())
    assert err.lines() == ["SentencePiece training failed: INTERNAL: something odd"]
