"""Tokenizer quality on held-out text: compression per language, exact round-trip, morpheme- and
bunsetsu-boundary crossing (and what the crossing tokens are), byte fallback, and Hugging Face vs
SentencePiece ids."""

from __future__ import annotations

import bisect
import re
import resource
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from factory.writing_systems import JAPANESE, KANA, KANJI
from tokenizer.pretokenize import Segmenter

if TYPE_CHECKING:  # for annotations only
    from sentencepiece import SentencePieceProcessor
    from transformers import PreTrainedTokenizerBase

MAX_EXAMPLES = 3
TOP_CROSSING = 10
HEADLINE = ("round_trip_failures", "hf_round_trip_failures", "hf_sp_id_mismatches", "boundary_crossing_rate",
            "bunsetsu_crossing_rate", "byte_fallback_rate", "chars_per_token", "bytes_per_token")
PER_LANGUAGE = ("chars_per_token", "bytes_per_token", "boundary_crossing_rate", "bunsetsu_crossing_rate")
_LATIN = re.compile(r"[A-Za-z]")


def language_of(line: str) -> str:
    """'ja' if the line has kana or kanji, else 'en' if it has Latin letters, else 'other'."""
    if JAPANESE.search(line):
        return "ja"
    return "en" if _LATIN.search(line) else "other"


def interior_boundaries(pieces: Iterable[str]) -> list[int]:
    """UTF-8 byte offsets where one piece ends and the next begins."""
    offsets, pos = [], 0
    for piece in pieces:
        pos += len(piece.encode("utf-8"))
        offsets.append(pos)
    return offsets[:-1]


def crossing_tokens(spans: Iterable[tuple[int, int]], boundaries: list[int]) -> list[int]:
    """Indices of the tokens whose byte span [begin, end) has a boundary strictly inside it."""
    out = []
    for index, (begin, end) in enumerate(spans):
        i = bisect.bisect_right(boundaries, begin)
        if i < len(boundaries) and boundaries[i] < end:
            out.append(index)
    return out


def crossing_count(spans: Iterable[tuple[int, int]], boundaries: list[int]) -> int:
    """Tokens whose byte span [begin, end) has a boundary strictly inside it."""
    return len(crossing_tokens(spans, boundaries))


def piece_kind(piece: str, is_byte: bool) -> str:
    """What a token is made of, to tell where boundary crossing comes from: a byte-fallback piece, digits,
    whitespace, kana (with or without kanji), kanji, ASCII letters, ASCII symbols, or other characters."""
    text = piece.replace("\u2581", " ")
    if is_byte:
        return "byte_fallback"
    if any(c.isdigit() for c in text):
        return "digits"
    if any(c.isspace() for c in text):
        return "whitespace"
    if KANA.search(text):
        return "kana"
    if KANJI.search(text):
        return "kanji"
    if text.isascii():
        return "ascii_letters" if _LATIN.search(text) else "ascii_symbols"
    return "other"


@dataclass
class LanguageStats:
    lines: int = 0
    chars: int = 0
    bytes: int = 0
    tokens: int = 0
    crossing: int = 0
    crossing_bunsetsu: int = 0
    crossing_pieces: Counter = field(default_factory=Counter)
    """Morpheme-crossing tokens by (kind, piece)."""

    def figures(self) -> dict[str, float | int | None]:
        per = (lambda x: round(x / self.tokens, 4)) if self.tokens else (lambda x: None)
        return {"lines": self.lines, "chars": self.chars, "bytes": self.bytes, "tokens": self.tokens,
                "chars_per_token": per(self.chars), "bytes_per_token": per(self.bytes),
                "boundary_crossing_rate": per(self.crossing), "bunsetsu_crossing_rate": per(self.crossing_bunsetsu),
                **crossing_breakdown(self.crossing_pieces, self.tokens)}


def crossing_breakdown(pieces: Counter, tokens: int) -> dict[str, dict]:
    """Morpheme-crossing tokens as a share of all tokens, by kind, and the pieces that cross most often."""
    kinds: Counter = Counter()
    for (kind, _), n in pieces.items():
        kinds[kind] += n
    return {"crossing_by_kind": {k: round(n / tokens, 5) for k, n in kinds.most_common()} if tokens else {},
            "crossing_pieces": {piece: n for (_, piece), n in pieces.most_common(TOP_CROSSING)}}


def evaluate(sp: SentencePieceProcessor, hf_tok: PreTrainedTokenizerBase, segmenter: Segmenter, lines: list[str],
             bunsetsu: Segmenter) -> dict[str, Any]:
    """Encode every held-out line with SentencePiece and the HF export and compare; `segmenter` gives the
    MeCab morpheme boundaries that tokens are checked against, `bunsetsu` the bunsetsu boundaries."""
    protos = sp.encode(lines, return_type="proto") if lines else []
    hf_ids = hf_tok(lines, add_special_tokens=False)["input_ids"] if lines else []
    hf_text = hf_tok.batch_decode(hf_ids) if lines else []
    langs: dict[str, LanguageStats] = {}
    failures: dict[str, list[str]] = {"round_trip": [], "hf_round_trip": [], "hf_sp_id_mismatch": []}
    byte_tokens = 0
    for line, proto, hf, hf_line in zip(lines, protos, hf_ids, hf_text):
        ids = [p.id for p in proto.pieces]
        stats = langs.setdefault(language_of(line), LanguageStats())
        stats.lines += 1
        stats.chars += len(line)
        stats.bytes += len(line.encode("utf-8"))
        stats.tokens += len(ids)
        spans = [(p.begin, p.end) for p in proto.pieces]
        crossing = crossing_tokens(spans, interior_boundaries(segmenter.pieces(line)))
        stats.crossing += len(crossing)
        stats.crossing_pieces.update((piece_kind(proto.pieces[i].piece, sp.is_byte(ids[i])), proto.pieces[i].piece)
                                     for i in crossing)
        stats.crossing_bunsetsu += crossing_count(spans, interior_boundaries(bunsetsu.pieces(line)))
        byte_tokens += sum(map(sp.is_byte, ids))
        for kind, failed in (("round_trip", sp.decode(ids) != line), ("hf_round_trip", hf_line != line),
                             ("hf_sp_id_mismatch", hf != ids)):
            if failed:
                failures[kind].append(line)
    return _summary(langs, failures, byte_tokens)


def _summary(langs: dict[str, LanguageStats], failures: dict[str, list[str]], byte_tokens: int) -> dict[str, Any]:
    total = LanguageStats(*(sum(getattr(s, f) for s in langs.values())
                            for f in ("lines", "chars", "bytes", "tokens", "crossing", "crossing_bunsetsu")),
                          sum((s.crossing_pieces for s in langs.values()), Counter()))
    overall = total.figures()
    return {
        "lines": total.lines,
        "round_trip_failures": len(failures["round_trip"]),
        "hf_round_trip_failures": len(failures["hf_round_trip"]),
        "hf_sp_id_mismatches": len(failures["hf_sp_id_mismatch"]),
        "boundary_crossing_rate": overall["boundary_crossing_rate"],
        "bunsetsu_crossing_rate": overall["bunsetsu_crossing_rate"],
        "byte_fallback_rate": round(byte_tokens / total.tokens, 6) if total.tokens else None,
        "chars_per_token": overall["chars_per_token"],
        "bytes_per_token": overall["bytes_per_token"],
        "crossing_by_kind": overall["crossing_by_kind"],
        "crossing_pieces": overall["crossing_pieces"],
        "languages": {lang: langs[lang].figures() for lang in sorted(langs)},
        "examples": {kind: lines[:MAX_EXAMPLES] for kind, lines in failures.items() if lines},
    }


def peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (pretokenize workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mib": round(own / 1024, 1), "workers_peak_rss_mib": round(children / 1024, 1)}


def metrics(report: dict[str, Any]) -> dict[str, float | int | str]:
    """The report's headline figures, flat, for the run manifest."""
    held = report["heldout"]
    out = {"heldout_lines": held["lines"], **{key: held[key] for key in HEADLINE}}
    for lang, figs in held["languages"].items():
        out.update({f"{key}_{lang}": figs[key] for key in PER_LANGUAGE})
    out.update(report["timing"], vocab_size=report["tokenizer"]["vocab_size"],
               model_type=report["tokenizer"]["model_type"],
               train_bytes=report["corpus"]["train_bytes"])
    return {key: value for key, value in out.items() if value is not None}
