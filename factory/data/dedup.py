"""What exact dedup compares: the NFKC-normalized, case-folded, whitespace-collapsed text, and its hash."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the text exact dedup compares."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_key(text: str) -> bytes:
    """16-byte hash of the normalized text."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()
