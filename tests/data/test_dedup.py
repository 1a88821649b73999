"""Exact dedup on normalized text and near dedup with MinHash LSH."""

from __future__ import annotations

from factory.data.config import DedupConfig
from factory.data.dedup import Deduper, exact_key, normalize, signature

DOC = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で"
       "ニャーニャー泣いていた事だけは記憶している。吾輩はここで始めて人間というものを見た。")
OTHER = ("富士山は標高3776メートルで、日本で最も高い山である。夏の登山シーズンには多くの登山者が山頂を目指す。"
         "山頂からの御来光は格別で、毎年多くの人がその景色を見るために夜通し歩く。")


def test_normalization_ignores_width_case_and_whitespace():
    assert normalize("  ＡＢＣ　abc\n\tテスト ") == "abc abc テスト"
    assert exact_key("ＡＢＣ テスト") == exact_key("abc   テスト")
    assert exact_key("abc テスト") != exact_key("abd テスト")


def _check(d: Deduper, text: str, source: str):
    return d.check(exact_key(text), signature(text, d.cfg), source)


def test_exact_then_near_duplicates_are_caught_and_distinct_text_kept():
    d = Deduper(DedupConfig())
    assert _check(d, DOC, "a:1") is None
    assert _check(d, "  " + DOC.replace("猫", "猫") + "\n", "a:2") == ("exact_dup", "normalized text seen before")
    near = DOC.replace("名前はまだ無い", "名前はまだない")
    assert _check(d, near, "a:3") == ("near_dup", "near duplicate of a:1")
    assert _check(d, OTHER, "a:4") is None


def test_signature_similarity_tracks_text_overlap():
    cfg = DedupConfig()
    a, b, c = (signature(t, cfg) for t in (DOC, DOC[:-5] + "見たのだ。", OTHER))
    assert (a == b).mean() > 0.8
    assert (a == c).mean() < 0.1


def test_switches_turn_each_kind_off():
    d = Deduper(DedupConfig(exact=False, near=False))
    assert _check(d, DOC, "a:1") is None and _check(d, DOC, "a:2") is None
