"""Quality filters: each rejects for its own reason and keeps clean Japanese text."""

from __future__ import annotations

from factory.config import validate_config
from factory.data.filters import (DuplicateLines, JapaneseShare, Length, RepeatedNgrams, build_filters,
                                  first_rejection, japanese_share)

CLEAN = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
         "ニャーニャー泣いていた事だけは記憶している。")


def test_length_bounds():
    f = Length(min_chars=5, max_chars=10)
    assert f("  短い  ") == "2 chars < min_chars 5"
    assert f("ちょうど五文字") is None
    assert f("あ" * 11) == "11 chars > max_chars 10"


def test_japanese_share():
    assert japanese_share("日本語のテキスト") == 1.0
    assert japanese_share("English text only") == 0.0
    assert japanese_share("1234 !!") == 0.0
    assert JapaneseShare(0.5)("This is mostly English with 少し日本語") == "Japanese share 0.18 < 0.5"
    assert JapaneseShare(0.5)(CLEAN) is None


def test_duplicate_lines():
    text = "\n".join(["同じ行です"] * 3 + ["違う行です"])
    assert DuplicateLines(0.3)(text) == "0.50 of lines repeat > 0.3"
    assert DuplicateLines(0.3)("一行目\n二行目\n三行目") is None


def test_repeated_ngrams():
    assert RepeatedNgrams(5, 0.3)("今すぐ購入！" * 20).startswith("0.9")
    assert RepeatedNgrams(5, 0.3)(CLEAN) is None


def test_chain_order_and_japanese_only_filters():
    cfg = validate_config({"run": {"name": "t", "dir": "runs/t"}, "data": {"inputs": ["x.txt"]}}).data
    ja = build_filters(cfg, japanese=True)
    en = build_filters(cfg, japanese=False)
    assert [f.name for f in ja] == ["length", "japanese_share", "duplicate_lines", "repeated_ngrams", "langmix"]
    assert [f.name for f in en] == ["length", "duplicate_lines", "repeated_ngrams"]
    assert first_rejection(ja, "short") == ("length", "5 chars < min_chars 20")
    assert first_rejection(ja, CLEAN) is None
    english = "The quick brown fox jumps over the lazy dog near the river bank."
    assert first_rejection(ja, english)[0] == "japanese_share"
    assert first_rejection(en, english) is None
    assert first_rejection(ja, CLEAN.replace("。名前", "。jednak to jest 名前"))[0] == "langmix"
