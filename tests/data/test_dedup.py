"""The normalization exact dedup compares."""

from __future__ import annotations

from factory.data.dedup import exact_key, normalize


def test_normalization_ignores_width_case_and_whitespace():
    assert normalize("  ＡＢＣ　abc\n\tテスト ") == "abc abc テスト"
    assert exact_key("ＡＢＣ テスト") == exact_key("abc   テスト")
    assert exact_key("abc テスト") != exact_key("abd テスト")
