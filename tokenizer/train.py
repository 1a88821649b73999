"""SentencePiece training on pretokenized text, with its failures turned into one-line config errors."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from factory.errors import ConfigError, FactoryError
from tokenizer.config import TokenizerConfig
from tokenizer.scores import quantize_scores

MAX_SENTENCE_BYTES = 1 << 16
"""Longer training lines are skipped by SentencePiece."""
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def trainer_args(settings: TokenizerConfig, text: Path, model_prefix: Path) -> dict[str, Any]:
    """SentencePieceTrainer arguments: Tanuki's recipe with exact round-trip (identity, no dummy prefix)."""
    t = settings.tokens
    args: dict[str, Any] = dict(
        input=str(text), model_prefix=str(model_prefix), model_type=settings.model_type,
                                vocab_size=settings.vocab_size,
        character_coverage=settings.character_coverage, byte_fallback=settings.byte_fallback,
                                split_digits=settings.split_digits,
        normalization_rule_name="nfkc" if settings.normalization == "nfkc" else "identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, add_dummy_prefix=False,
        unk_piece=t.unk, bos_piece=t.bos, eos_piece=t.eos, pad_piece=t.pad,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        user_defined_symbols=t.special() + t.user_defined,
        max_sentence_length=MAX_SENTENCE_BYTES, num_threads=settings.num_workers, minloglevel=2,
    )
    return args


def train(settings: TokenizerConfig, text: Path, model_prefix: Path) -> float:
    """Train `<model_prefix>.model` and `.vocab` from `text`; returns the seconds it took. Unigram scores
    are put on a grid (tokenizer.scores) so the HF export gives SentencePiece's ids."""
    import sentencepiece as spm

    t0 = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(**trainer_args(settings, text, model_prefix))
    except RuntimeError as e:
        raise explain(str(e), settings) from None
    if settings.model_type == "unigram":
        quantize_scores(Path(f"{model_prefix}.model"))
    return time.perf_counter() - t0


def explain(message: str, settings: TokenizerConfig) -> FactoryError:
    """One actionable line for SentencePiece's vocabulary-size failures; other failures pass through."""
    if m := _TOO_HIGH.search(message):
        return ConfigError(
            f"tokenizer.vocab_size={settings.vocab_size}: the training text supports at most {m.group(2)} pieces "
            f"({settings.model_type}, granularity={settings.granularity}); set tokenizer.vocab_size<={m.group(2)} "
            f"or train on more text")
    if m := _TOO_LOW.search(message):
        return ConfigError(
            f"tokenizer.vocab_size={settings.vocab_size}: the training text needs at least {m.group(2)} pieces to "
            f"cover its characters at character_coverage={settings.character_coverage}; raise tokenizer.vocab_size "
            f"or lower tokenizer.character_coverage")
    return FactoryError(f"SentencePiece training failed: {message.splitlines()[0] if message else 'no message'}")
