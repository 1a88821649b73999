"""The quality report: boundary crossing, language split, and the granularity trade-off it exposes."""

from __future__ import annotations

import pytest

from tokenizer.report import crossing_count, interior_boundaries, language_of, metrics, piece_kind


def test_boundaries_are_utf8_byte_offsets_between_pieces():
    assert interior_boundaries(["東京", "都", " に"]) == [6, 9]
    assert interior_boundaries(["one"]) == []


def test_a_token_crosses_only_when_a_boundary_is_strictly_inside_it():
    boundaries = [6, 9]
    assert crossing_count([(0, 6), (6, 9), (9, 12)], boundaries) == 0
    assert crossing_count([(0, 9), (9, 12)], boundaries) == 1
    assert crossing_count([(3, 12)], boundaries) == 1
    assert crossing_count([(2, 2), (0, 3)], boundaries) == 0


@pytest.mark.parametrize("line, lang", [("ls -l で表示", "ja"), ("ｶﾀｶﾅ", "ja"), ("Hello, world", "en"),
                                        ("12:34 --", "other")])
def test_language_of(line, lang):
    assert language_of(line) == lang


def test_report_shows_compression_against_boundary_crossing(trained):
    reports = {g: trained(granularity=g, num_workers=1)[1]["heldout"] for g in ("morpheme", "bunsetsu", "none")}
    crossing = {g: r["boundary_crossing_rate"] for g, r in reports.items()}
    compression = {g: r["languages"]["ja"]["chars_per_token"] for g, r in reports.items()}
    assert crossing["morpheme"] <= 0.02
    assert crossing["bunsetsu"] > 2 * crossing["morpheme"]
    assert crossing["none"] > 2 * crossing["morpheme"]
    assert compression["bunsetsu"] > compression["morpheme"]
    assert compression["none"] > compression["morpheme"]
    for r in reports.values():  # bunsetsu boundaries are morpheme boundaries: crossing one crosses the other
        assert r["bunsetsu_crossing_rate"] <= r["boundary_crossing_rate"]


def test_manifest_metrics_flatten_the_headline_figures(trained):
    _, report = trained()
    flat = metrics(report)
    held = report["heldout"]
    assert flat["round_trip_failures"] == held["round_trip_failures"] == 0
    assert flat["chars_per_token_ja"] == held["languages"]["ja"]["chars_per_token"] > 0
    assert flat["bytes_per_token_en"] == held["languages"]["en"]["bytes_per_token"] > 0
    assert flat["training_seconds"] > 0 and flat["peak_rss_mib"] > 0
    assert flat["heldout_lines"] == report["corpus"]["heldout_lines"] > 0


def test_piece_kind_says_what_a_crossing_token_is_made_of():
    kinds = {piece: piece_kind(piece, False) for piece in ("して", "東京", "()", "abc", "12", "▁(", "）。", "テスト中")}
    assert kinds == {"して": "kana", "東京": "kanji", "()": "ascii_symbols", "abc": "ascii_letters", "12": "digits",
                     "▁(": "whitespace", "）。": "other", "テスト中": "kana"}
    assert piece_kind("<0xE3>", True) == "byte_fallback"


def test_the_crossing_breakdown_adds_up_to_the_crossing_rate(trained):
    held = trained()[1]["heldout"]  # the default: bpe
    assert held["boundary_crossing_rate"] > 0
    assert abs(sum(held["crossing_by_kind"].values()) - held["boundary_crossing_rate"]) < 1e-3
    assert held["crossing_pieces"] and all(n > 0 for n in held["crossing_pieces"].values())
    assert set(held["languages"]["ja"]["crossing_by_kind"]) <= set(held["crossing_by_kind"])
