"""What counts as a Japanese character, once for every measure (the data filters, the language-mixing detector,
the tokenizer report, vocabulary extension), and the foreign scripts and Chinese-only Han the detector flags."""

from __future__ import annotations

import re
from functools import lru_cache

# Scripts that never belong in Japanese prose (Latin and Greek are judged by the detector's own rules).
FOREIGN_SCRIPTS = {
    "Cyrillic": "\u0400-\u052f\u1c80-\u1c8f\u2de0-\u2dff\ua640-\ua69f",
    "Armenian": "\u0530-\u058f", "Hebrew": "\u0590-\u05ff\ufb1d-\ufb4f",
    "Arabic": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff",
    "Devanagari": "\u0900-\u097f", "Bengali": "\u0980-\u09ff", "Gurmukhi": "\u0a00-\u0a7f",
    "Gujarati": "\u0a80-\u0aff", "Tamil": "\u0b80-\u0bff", "Telugu": "\u0c00-\u0c7f", "Kannada": "\u0c80-\u0cff",
    "Malayalam": "\u0d00-\u0d7f", "Sinhala": "\u0d80-\u0dff", "Thai": "\u0e00-\u0e7f", "Lao": "\u0e80-\u0eff",
    "Tibetan": "\u0f00-\u0fff", "Myanmar": "\u1000-\u109f", "Georgian": "\u10a0-\u10ff\u2d00-\u2d2f",
    "Hangul": "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff", "Ethiopic": "\u1200-\u139f",
    "Khmer": "\u1780-\u17ff", "Mongolian": "\u1800-\u18af",
}
GREEK = "\u0370-\u03ff\u1f00-\u1fff"
FOREIGN_RUN = re.compile("|".join(f"(?P<{name}>[{chars}]+)" for name, chars in FOREIGN_SCRIPTS.items())
                         + f"|(?P<Greek>[{GREEK}]+)")
ANY_FOREIGN = re.compile("[" + "".join(FOREIGN_SCRIPTS.values()) + GREEK + "]")
KANA_CHARS = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
"""Hiragana, katakana (with ー and the iteration marks ゝゞヽヾ), katakana phonetic extensions, half-width katakana."""
KANJI_CHARS = "\u3005\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
"""々 and the CJK ideographs Japanese writes: extension A, the unified block, compatibility ideographs."""
JAPANESE_CHARS = KANA_CHARS + KANJI_CHARS
JAPANESE = re.compile(f"[{JAPANESE_CHARS}]")
"""Kana and kanji: the characters a Japanese word is made of (punctuation excluded)."""
KANA = re.compile(f"[{KANA_CHARS}]")
KANJI = re.compile(f"[{KANJI_CHARS}]")
JAPANESE_TEXT_CHARS = JAPANESE_CHARS + "\u3000-\u303f\uff00-\uffef"
"""Japanese characters with the CJK punctuation and full-width forms that Japanese prose sets between them."""


@lru_cache(maxsize=1)
def chinese_only() -> frozenset[str]:
    """Han characters that Japanese text does not use: simplified Chinese (GB 2312) outside JIS X 0208, and
    any character that no Japanese character set (JIS X 0213, Windows-31J) encodes.

    们 这 说 问 题 关 开 ... but not 没 or 个, which Japanese writes too.
    """
    out = set()
    for code in range(0x4E00, 0xA000):
        char = chr(code)
        japanese = _encodes(char, "cp932")
        if not japanese and (_encodes(char, "gb2312") or not _encodes(char, "euc_jis_2004")):
            out.add(char)
    return frozenset(out)


def _encodes(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
    except UnicodeEncodeError:
        return False
    return True
