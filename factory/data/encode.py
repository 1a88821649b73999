"""Token ids of JSONL chunks for the pack stage: JSON parsed by pyarrow, text encoded by the fastest path that
gives SentencePiece's ids (gigatoken for BPE models with byte fallback, SentencePiece itself for unigram),
returned as one flat token array plus each document's length."""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from factory.errors import DataError, VerificationError
from factory.records import TORN, decode_line, jsonl_record

if TYPE_CHECKING:  # for annotations only
    import pyarrow as pa
    from sentencepiece import SentencePieceProcessor

VERIFY_DOCS = 64
"""Documents of an encoder's first chunk that are also encoded by SentencePiece and must match."""
EOD_PIECES = ("<EOD>", "</s>")


def piece_id(sp: SentencePieceProcessor, piece: str) -> int | None:
    """The id of `piece` in a SentencePieceProcessor, None if it is not in the vocabulary."""
    pid = sp.piece_to_id(piece)
    return pid if sp.id_to_piece(pid) == piece else None


def eod_id(sp: SentencePieceProcessor) -> int | None:
    """The end-of-document id: <EOD> when the model defines it, else </s>."""
    return next((i for p in EOD_PIECES if (i := piece_id(sp, p)) is not None), None)


def parse_texts(chunk: bytes, field: str, path: str, first_line: int) -> pa.StringArray:
    """The `field` strings of a chunk of JSONL lines (blank lines skipped) as a pyarrow string array.

    pyarrow is the fast path; wherever it could accept what the strict reader (factory.strict_json) refuses,
    the chunk is read line by line instead, so a bad line is named by file and line and pack and the data
    stage agree on every record: every field is parsed (`infer`), so a key given twice anywhere is an error,
    and a chunk that may hold NaN or Infinity, which pyarrow reads as numbers, takes the strict path."""
    import pyarrow as pa
    import pyarrow.json as pj

    if _may_hold_non_finite(chunk):
        return pa.array(python_texts(chunk, field, path, first_line), type=pa.string())
    options = pj.ParseOptions(explicit_schema=pa.schema([(field, pa.string())]), unexpected_field_behavior="infer")
    try:
        column = pj.read_json(pa.BufferReader(chunk), parse_options=options,
                              read_options=pj.ReadOptions(use_threads=True, block_size=1 << 20))
        texts = column.column(field).combine_chunks()
        texts.validate(full=True)  # pyarrow leaves bytes that are not UTF-8 in strings; gigatoken trusts them
        if texts.null_count == 0:
            return texts
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    return pa.array(python_texts(chunk, field, path, first_line), type=pa.string())


def _may_hold_non_finite(chunk: bytes) -> bool:
    """Whether `NaN` or `Infinity` occurs anywhere in `chunk`. The one-byte tests go first: a memchr each,
    about twenty times faster than the word tests, and Japanese text rarely holds an N or an I at all."""
    return (b"N" in chunk and b"NaN" in chunk) or (b"I" in chunk and b"Infinity" in chunk)


def python_texts(chunk: bytes, field: str, path: str, first_line: int) -> list[str]:
    """The same strings read line by line as factory.records reads JSONL, raising DataError at the first bad
    line (a torn last line is skipped with a warning, as everywhere)."""
    texts = []
    lines = chunk.split(b"\n")
    for i, raw in enumerate(lines):
        ended = i < len(lines) - 1
        record = jsonl_record(*decode_line(raw), field, f"{path}:{first_line + i}", ended)
        if record is TORN or record is None:
            continue
        if record.error:
            raise DataError(f"{record.source}: {record.error}")
        texts.append(record.text)
    return texts


def _awkward_strings(texts):
    """A zero-copy awkward view of a pyarrow string array, which gigatoken reads without Python objects."""
    import awkward as ak

    _, offsets, data = texts.buffers()
    begin = texts.offset
    offsets = np.frombuffer(offsets, dtype=np.int32, count=len(texts) + 1, offset=4 * begin).astype(np.int64)
    chars = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    content = ak.contents.NumpyArray(chars, parameters={"__array__": "char"})
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content,
                                                parameters={"__array__": "string"}))


def uses_gigatoken(model_file: Path) -> bool:
    """gigatoken reproduces SentencePiece BPE models with byte fallback; unigram stays with SentencePiece."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return proto.trainer_spec.model_type == model_pb2.TrainerSpec.BPE and proto.trainer_spec.byte_fallback


class DocumentEncoder:
    """Encodes pyarrow string arrays with `backend` ('gigatoken' or 'sentencepiece'): SentencePiece on
    `threads` threads, gigatoken on its pool of one thread per core whenever threads > 1."""

    def __init__(self, model_file: Path, threads: int = 1):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.threads = threads
        self.backend = "gigatoken" if uses_gigatoken(model_file) else "sentencepiece"
        self._gigatoken = None
        if self.backend == "gigatoken":
            import gigatoken

            self._gigatoken = gigatoken.Tokenizer.from_sentencepiece(str(model_file))
        # Literal "<s>" in text is characters to SentencePiece but the control id to gigatoken.
        self._control = np.array([i for i in range(self.sp.get_piece_size())
                                  if self.sp.is_control(i) or self.sp.is_unknown(i)], dtype=np.uint32)
        self._verified = False

    def encode(self, texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (uint32, documents back to back) and the token count of every document, empty ones too."""
        if self._gigatoken is None:
            docs = self.sp.encode(texts.to_pylist(), num_threads=self.threads)
            lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
            tokens = np.fromiter(chain.from_iterable(docs), dtype=np.uint32, count=int(lengths.sum()))
            return tokens, lengths
        encoded = self._gigatoken.encode_batch(_awkward_strings(texts), parallel=self.threads > 1).layout
        offsets, tokens = np.asarray(encoded.offsets.data, dtype=np.int64), np.asarray(encoded.content.data)
        tokens, lengths = tokens[offsets[0]:offsets[-1]], np.diff(offsets)
        if np.isin(tokens, self._control).any():
            tokens, lengths = self._with_literal_controls(texts, tokens, lengths)
        if not self._verified:
            self._verify(texts, tokens, lengths)
        return tokens, lengths

    def _with_literal_controls(self, texts, tokens, lengths) -> tuple[np.ndarray, np.ndarray]:
        """Re-encode with SentencePiece the documents where gigatoken matched a control piece's text."""
        ends = np.cumsum(lengths)
        docs = np.split(tokens, ends[:-1]) if len(lengths) else []
        for i, ids in enumerate(docs):
            if np.isin(ids, self._control).any():
                docs[i] = np.array(self.sp.encode(texts[i].as_py()), dtype=np.uint32)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        return (np.concatenate(docs) if docs else tokens), lengths

    def _verify(self, texts, tokens, lengths) -> None:
        count = min(VERIFY_DOCS, len(lengths))
        expected = self.sp.encode(texts.slice(0, count).to_pylist())
        ends = np.cumsum(lengths[:count])
        for i, ids in enumerate(expected):
            got = tokens[ends[i] - lengths[i]:ends[i]].tolist()
            if got != ids:
                raise VerificationError(f"pack: {self.backend} and SentencePiece disagree on a document "
                                        f"({got[:8]}... vs {ids[:8]}...); nothing was written")
        self._verified = count > 0


def with_eod(tokens: np.ndarray, lengths: np.ndarray, eod: int | None,
             dtype: type[np.integer]) -> tuple[np.ndarray, np.ndarray]:
    """Drop empty documents (nothing to learn, not even an EOD), append `eod` to the others, cast to `dtype`."""
    kept = lengths > 0
    if eod is not None and kept.any():
        tokens = np.insert(tokens, np.cumsum(lengths)[kept], eod)
        lengths = lengths[kept] + 1
    else:
        lengths = lengths[kept]
    return tokens.astype(dtype, copy=False), lengths
