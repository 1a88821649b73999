"""The tokenizer config section: strict keys, defaults that keep round-trip exact, collected rule checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.config import load_config
from factory.errors import ConfigError
from tokenizer.config import TokenizerConfig

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_bpe_under_morpheme_boundaries_with_exact_round_trip():
    tc = TokenizerConfig()
    assert (tc.model_type, tc.granularity, tc.normalization, tc.byte_fallback, tc.split_digits) == \
        ("bpe", "morpheme", "identity", True, True)
    assert tc.problems("tokenizer") == []


def test_rules_name_the_key_and_the_bound():
    assert TokenizerConfig(vocab_size=100).problems("tokenizer") == [
        "tokenizer.vocab_size=100: must be at least 265 (8 special tokens + 256 byte pieces + 1 learned piece)"]
    assert TokenizerConfig(vocab_size=100, byte_fallback=False).problems("tokenizer") == []
    dup = TokenizerConfig(tokens={"eod": "</s>", "user_defined": ["\n", ""]}).problems("tokenizer")
    assert [line.split(":")[-1].strip() for line in dup] == ["special tokens must be non-empty strings",
                                                             "special tokens must be distinct"]


def test_demo_config_overrides_and_unknown_keys():
    cfg = load_config(ROOT / "configs/demo-cpu.yaml", ["tokenizer.inputs=[a.txt,b.jsonl]", "tokenizer.vocab_size=500"])
    assert [str(p) for p in cfg.tokenizer.inputs] == ["a.txt", "b.jsonl"] and cfg.tokenizer.vocab_size == 500
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs/demo-cpu.yaml", ["tokenizer.granularity=word", "tokenizer.vocabsize=1"])
    assert sorted(line.split(": ")[1].split("=")[0] for line in info.value.lines()) == [
        "tokenizer.granularity", "tokenizer.vocabsize"]
