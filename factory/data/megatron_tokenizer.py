"""The project's SentencePiece tokenizer as a megatron.core tokenizer (what GPTDataset needs)."""

from __future__ import annotations

from pathlib import Path

from megatron.core.tokenizers import MegatronTokenizerBase

from factory.data.encode import eod_id, piece_id as _piece_id


class SentencePieceMegatronTokenizer(MegatronTokenizerBase):
    """tokenizer.model wrapped for megatron.core datasets; EOD is <EOD> when defined, else </s>."""

    def __init__(self, model_file: str | Path):
        import sentencepiece as spm

        super().__init__(str(model_file), {"library": "sentencepiece"})
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        eod = eod_id(self.sp)
        if eod is None:
            raise ValueError(f"{model_file}: the tokenizer defines neither <EOD> nor </s>")
        self._eod = eod

    def tokenize(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def vocab(self) -> dict[str, int]:
        return {self.sp.id_to_piece(i): i for i in range(self.sp.vocab_size())}

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def pad(self) -> int:
        return _piece_id(self.sp, "<pad>") if _piece_id(self.sp, "<pad>") is not None else self.sp.pad_id()

    @property
    def unique_identifiers(self) -> dict[str, str]:
        """Identifies the tokenizer in Megatron's dataset cache keys."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "tokenizer_path": self.path}

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError("chat templates live in the HF tokenizer files (tokenizer_config.json)")
