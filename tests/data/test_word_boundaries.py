"""Word boundaries from MeCab: where a foreign span glued into Japanese cuts a word and where it sits between."""

from __future__ import annotations

import pytest

from factory.data.word_boundaries import inside_word


@pytest.mark.parametrize("left,right", [
    ("右ク", "リック"),        # one morpheme cut in two
    ("グラデーシ", "ョン"),
    ("管理", "者"),            # a suffix bound to the noun before it
    ("等しくなるは", "ずです"),  # a dependent noun
    ("して", "いる"),          # an auxiliary verb after て
    ("設定", "ファイル"),       # two nouns of a compound
])
def test_cut_words(left, right):
    assert inside_word(left, right)


@pytest.mark.parametrize("left,right", [
    ("画像を", "で開く"),       # between particles
    ("バージョンの", "で作成"),  # の|で reads as ので, still between particles
    ("の", "系"),
    ("これは", "です"),
    ("", "を使う"),
])
def test_boundaries_between_words(left, right):
    assert not inside_word(left, right)


def test_crossing_only_ignores_compounds_and_suffixes():
    assert not inside_word("設定", "ファイル", crossing_only=True)
    assert not inside_word("管理", "者", crossing_only=True)
    assert inside_word("右ク", "リック", crossing_only=True)
