"""Small composable quality filters: each returns a rejection detail, or None to keep the document."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from factory.data.config import DataConfig
from factory.data.langmix import LangMixDetector
from factory.writing_systems import JAPANESE



class Filter(Protocol):
    name: str
    """Reason recorded when this filter rejects (a key of the manifest's rejected.* counts)."""

    def __call__(self, text: str) -> str | None: ...


@dataclass(frozen=True)
class Length:
    min_chars: int
    max_chars: int
    name: str = "length"

    def __call__(self, text: str) -> str | None:
        n = len(text.strip())
        if n < self.min_chars:
            return f"{n} chars < min_chars {self.min_chars}"
        return f"{n} chars > max_chars {self.max_chars}" if n > self.max_chars else None


def japanese_share(text: str) -> float:
    """Share of Japanese characters (kana, kanji) among letters; 0 for text without letters."""
    letters = sum(1 for c in text if c.isalpha())
    return len(JAPANESE.findall(text)) / letters if letters else 0.0


@dataclass(frozen=True)
class JapaneseShare:
    min_share: float
    name: str = "japanese_share"

    def __call__(self, text: str) -> str | None:
        share = japanese_share(text)
        return f"Japanese share {share:.2f} < {self.min_share}" if share < self.min_share else None


@dataclass(frozen=True)
class DuplicateLines:
    max_share: float
    name: str = "duplicate_lines"

    def __call__(self, text: str) -> str | None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        repeats = len(lines) - len(set(lines))
        share = repeats / len(lines) if lines else 0.0
        return f"{share:.2f} of lines repeat > {self.max_share}" if share > self.max_share else None


@dataclass(frozen=True)
class RepeatedNgrams:
    n: int
    max_share: float
    name: str = "repeated_ngrams"

    def __call__(self, text: str) -> str | None:
        grams = Counter(text[i:i + self.n] for i in range(len(text) - self.n + 1))
        total = sum(grams.values())
        share = (total - len(grams)) / total if total else 0.0
        return (f"{share:.2f} of {self.n}-grams repeat > {self.max_share}"
                if share > self.max_share else None)


@dataclass(frozen=True)
class LanguageMix:
    detector: LangMixDetector
    name: str = "langmix"

    def __call__(self, text: str) -> str | None:
        findings = self.detector.findings(text)
        return "; ".join(str(f) for f in findings[:3]) if findings else None


def build_filters(cfg: DataConfig, japanese: bool) -> list[Filter]:
    """The filter chain for one input, cheapest first; Japanese-only filters only for Japanese inputs."""
    f = cfg.filters
    chain: list[Filter] = [Length(f.min_chars, f.max_chars)]
    if japanese and f.min_japanese_share > 0:
        chain.append(JapaneseShare(f.min_japanese_share))
    chain += [DuplicateLines(f.max_duplicate_line_share), RepeatedNgrams(f.ngram_size, f.max_repeated_ngram_share)]
    if japanese and f.langmix:
        chain.append(LanguageMix(LangMixDetector.from_config(cfg.langmix)))
    return chain


def first_rejection(chain: list[Filter], text: str) -> tuple[str, str] | None:
    """(filter name, detail) of the first filter that rejects `text`, or None when all keep it."""
    for flt in chain:
        detail = flt(text)
        if detail is not None:
            return flt.name, detail
    return None
