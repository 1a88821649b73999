"""Script tables of the language-mixing detector."""

from __future__ import annotations

from factory.writing_systems import FOREIGN_RUN, JAPANESE, chinese_only


def test_chinese_only_han_excludes_what_japanese_writes():
    table = chinese_only()
    assert set("们这说问题关开东车马鸟书语") <= table
    assert not set("没个東車馬鳥書語問題関開日本漢字") & table


def test_foreign_runs_name_their_script():
    found = [(m.lastgroup, m.group()) for m in FOREIGN_RUN.finditer("서울 Москва αβγ ไทย عربى")]
    assert found == [("Hangul", "서울"), ("Cyrillic", "Москва"), ("Greek", "αβγ"), ("Thai", "ไทย"),
                     ("Arabic", "عربى")]


def test_japanese_is_kana_and_kanji():
    assert JAPANESE.findall("漢字かなカナ、。ABC") == list("漢字かなカナ")
