"""The `tokenizer:` config section: inputs, pretokenization, SentencePiece options and special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from factory.schema import OPERATIONAL, Section, rule

BYTE_PIECES = 256
UNIGRAM_GGUF = ("tokenizer.model_type=unigram: llama.cpp (GGUF) will not reproduce this tokenizer's ids (its "
                "SentencePiece path merges pieces greedily by score instead of Unigram's best path: 0 of 300 "
                "held-out Japanese lines matched transformers); keep unigram to reproduce an LLM-jp/Tanuki-style "
                "vocabulary, use bpe for models served as GGUF")
"""The one line a unigram tokenizer's plan and training print (docs/stages/tokenizer.md, "Unigram or BPE")."""


class SpecialTokens(Section):
    """Pieces that are never split. unk/bos/eos/pad are SentencePiece control pieces; the rest are
    user-defined symbols, matched whole wherever they occur in text."""

    unk: str = "<unk>"
    """Unknown piece (id 0); only produced when byte_fallback is off."""
    bos: str = "<s>"
    """Beginning of sequence (id 1)."""
    eos: str = "</s>"
    """SentencePiece's end-of-sequence piece (id 2). Training data never holds it, so the HF files do not name it
    as EOS: a base model's EOS is `eod`, a chat model's is `chat_end`."""
    pad: str = "<pad>"
    """Padding (id 3)."""
    eod: str = "<EOD>"
    """End of document, appended after every packed document by the pack stage; the EOS of a base model's HF
    files (tokenizer, config.json, generation_config.json), so generation stops where documents ended."""
    chat_start: str = "<|im_start|>"
    """Opens a chat turn in the chat template: `<|im_start|>role\\n content <|im_end|>\\n`."""
    chat_end: str = "<|im_end|>"
    """Closes a chat turn; the end of an assistant reply, and the EOS of the sft/dpo stages' HF folders."""
    user_defined: list[str] = Field(default_factory=lambda: ["\n"])
    """More symbols kept whole but not special (decoded even with skip_special_tokens); Tanuki adds "\\n"."""

    def control(self) -> list[str]:
        """The control pieces, in id order from 0."""
        return [self.unk, self.bos, self.eos, self.pad]

    def special(self) -> list[str]:
        """Symbols that are special in Hugging Face (skipped by skip_special_tokens)."""
        return [self.eod, self.chat_start, self.chat_end]

    def problems(self, prefix: str) -> list[str]:
        out: list[str] = []
        every = self.control() + self.special() + self.user_defined
        rule(out, all(every), prefix, every, "special tokens must be non-empty strings")
        rule(out, len(set(every)) == len(every), prefix, every, "special tokens must be distinct")
        return out


class TokenizerConfig(Section):
    """Trains a MeCab-pretokenized SentencePiece tokenizer (Tanuki's recipe), exports it to Hugging Face
    and reports its quality on held-out text."""

    inputs: list[Path] = Field(default_factory=list)
    """Text sources: .txt (one line per sentence), .jsonl (text in `text_field`), either optionally .gz,
    or a local Hugging Face `datasets` folder written by save_to_disk."""
    text_field: str = "text"
    """JSONL key / dataset column holding the text."""
    output_dir: Path | None = None
    """Where the tokenizer is written; null means `<run.dir>/tokenizer`."""
    sample_bytes: int | None = Field(default=None, gt=0)
    """Byte budget of training text, sampled evenly over all inputs; null trains on everything."""
    heldout_fraction: float = Field(default=0.02, ge=0, lt=0.5)
    """Share of lines held out of training and used for the report."""
    heldout_max_bytes: int = Field(default=2_000_000, gt=0)
    """Cap on held-out text, so the report stays cheap on large corpora."""
    granularity: Literal["morpheme", "bunsetsu", "none"] = "morpheme"
    """Pieces never cross MeCab morphemes (Tanuki), bunsetsu-like chunks (content word + particles,
    auxiliaries, suffixes), or none (raw SentencePiece)."""
    dictionary: Literal["unidic-lite", "ipadic"] = "unidic-lite"
    """MeCab dictionary for pretokenization and the boundary report (Tanuki used ipadic)."""
    model_type: Literal["unigram", "bpe"] = "bpe"
    """SentencePiece algorithm. bpe (with MeCab boundaries and byte fallback) compresses Japanese and English
    better on held-out text and is reproduced exactly by transformers, vLLM and llama.cpp (GGUF); unigram
    (Tanuki's, LLM-jp's) is for reproducing such a vocabulary: llama.cpp does not give its ids."""
    vocab_size: int = Field(default=32000, gt=0)
    """Total pieces, special tokens and the 256 byte pieces included."""
    byte_fallback: bool = True
    """Spell characters outside the vocabulary as UTF-8 byte pieces instead of <unk>."""
    split_digits: bool = True
    """Every digit is its own piece."""
    normalization: Literal["identity", "nfkc"] = "identity"
    """identity keeps decode(encode(x)) == x; nfkc folds full/half-width forms but breaks exact round-trip."""
    character_coverage: float = Field(default=0.9995, ge=0.98, le=1)
    """Share of characters covered by pieces (SentencePiece accepts 0.98-1); the rarest rest fall back to bytes."""
    tokens: SpecialTokens = Field(default_factory=SpecialTokens)
    """Control pieces, chat-template tokens and user-defined symbols."""
    num_workers: Annotated[int, OPERATIONAL] = Field(default=1, ge=1)
    """Processes for MeCab pretokenization and threads for SentencePiece training."""

    def problems(self, prefix: str) -> list[str]:
        out = self.tokens.problems(f"{prefix}.tokens")
        fixed = len(self.tokens.control() + self.tokens.special() + self.tokens.user_defined)
        floor = fixed + (BYTE_PIECES if self.byte_fallback else 0) + 1
        rule(out, self.vocab_size >= floor, f"{prefix}.vocab_size", self.vocab_size,
             f"must be at least {floor} ({fixed} special tokens"
             f"{f' + {BYTE_PIECES} byte pieces' if self.byte_fallback else ''} + 1 learned piece)")
        return out
