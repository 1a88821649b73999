"""pack's document encoders: gigatoken (BPE) and SentencePiece (unigram) give SentencePiece's ids; JSONL chunks
parsed by pyarrow with errors named by line, in chunks of whole lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from factory.data.encode import DocumentEncoder, parse_texts, with_eod
from factory.data.pack import _chunks
from factory.errors import DataError, VerificationError
from tests.tokenizer.conftest import TRICKY, fixture_lines

DOCS = TRICKY + fixture_lines() + ["", "   ", "\t\n\n", "a<s>b</s>c<unk>d<pad>e", "😀" * 5, "x" * 3000]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def model_file(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    text = folder / "train.txt"
    text.write_text("\n".join(fixture_lines() * 5), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "tokenizer"), model_type=request.param, vocab_size=1000, character_coverage=0.98,
        byte_fallback=True, user_defined_symbols=["<EOD>", "<|im_start|>", "<|im_end|>", "\n"],
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True, split_digits=True, hard_vocab_limit=False, minloglevel=2)
    return folder / "tokenizer.model"


def _jsonl(texts: list[str]) -> bytes:
    return "".join(json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)).encode()


def test_encoder_ids_equal_sentencepiece_ids_document_by_document(model_file):
    encoder = DocumentEncoder(model_file)
    assert encoder.backend == ("gigatoken" if "bpe" in str(model_file.parent) else "sentencepiece")
    tokens, lengths = encoder.encode(parse_texts(_jsonl(DOCS), "text", "x.jsonl", 1))
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    assert np.split(tokens, np.cumsum(lengths)[:-1]) and lengths.sum() == tokens.size
    for text, ids in zip(DOCS, np.split(tokens, np.cumsum(lengths)[:-1])):
        assert ids.tolist() == sp.encode(text), text  # literal "<s>" included: characters, as in SentencePiece


def test_eod_is_appended_and_empty_documents_are_dropped():
    tokens, lengths = with_eod(np.array([5, 6, 7], np.uint32), np.array([2, 0, 1]), eod=3, dtype=np.uint16)
    assert tokens.tolist() == [5, 6, 3, 7, 3] and lengths.tolist() == [3, 2] and tokens.dtype == np.uint16
    tokens, lengths = with_eod(np.array([5, 6], np.uint32), np.array([0, 2]), eod=None, dtype=np.int32)
    assert tokens.tolist() == [5, 6] and lengths.tolist() == [2]


def test_a_gigatoken_disagreement_is_refused(model_file, monkeypatch):
    encoder = DocumentEncoder(model_file)
    if encoder.backend != "gigatoken":
        pytest.skip("only the gigatoken path is checked against SentencePiece")
    monkeypatch.setattr(encoder.sp, "encode", lambda texts, **_: [[1, 2, 3] for _ in texts])
    with pytest.raises(VerificationError, match="gigatoken and SentencePiece disagree"):
        encoder.encode(parse_texts(_jsonl(["ordinary text"]), "text", "x.jsonl", 1))


@pytest.mark.parametrize("line, message", [
    (b'{"text": ', "x.jsonl:3: invalid JSON"),
    (b'{"body": "no text field"}', r"x.jsonl:3: no 'text' field \(keys: body\)"),
    (b'{"text": 5}', "x.jsonl:3: 'text' is int, expected a string"),
    (b'["text"]', "x.jsonl:3: expected a JSON object, got list"),
    (b'{"text": "\xff"}', "x.jsonl:3: not UTF-8"),
    (b'{"text": "c", "meta": {"k": 1, "k": 2}}', r"x.jsonl:3: invalid JSON \(key 'k' given twice"),
    (b'{"text": "c", "score": NaN}', r"x.jsonl:3: invalid JSON \(NaN is not a JSON number"),
    (b'{"text": "c", "score": -Infinity}', r"x.jsonl:3: invalid JSON \(-Infinity is not a JSON number"),
])
def test_bad_lines_are_named_by_file_and_line(line, message):
    """pyarrow reads a repeated key in a field pack does not use, and NaN, without complaint: the strict reader
    still names them, as it does for the data stage."""
    chunk = b'{"text": "a"}\n\n' + line + b'\n{"text": "b"}\n'
    with pytest.raises(DataError, match=f"^{message}"):
        parse_texts(chunk, "text", "x.jsonl", 1)


def test_chunks_hold_whole_lines_and_count_them(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl([f"document {i}" for i in range(50)]))
    chunks = [(first, chunk) for first, chunk, _ in _chunks(path, 100)]
    assert b"".join(c for _, c in chunks) == path.read_bytes() and len(chunks) > 5
    assert all(c.endswith(b"\n") for _, c in chunks)
    firsts = [first for first, _ in chunks]
    assert firsts == [1] + [1 + sum(c.count(b"\n") for _, c in chunks[:i]) for i in range(1, len(chunks))]
    assert [position for *_, position in _chunks(path, 100)][-1] == path.stat().st_size


def test_gzipped_chunks_are_the_same_lines_and_a_cut_one_names_the_last_whole_line(tmp_path):
    import gzip

    lines = _jsonl([f"document {i}" for i in range(5000)])
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(lines))
    assert b"".join(chunk for _, chunk, _ in _chunks(path, 4096)) == lines
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"^{path}: unreadable after line (\d+) \(Compressed file ended") as info:
        list(_chunks(path, 4096))
    last = int(re.search(r"after line (\d+)", str(info.value))[1])
    with gzip.open(path, "rb") as f:  # the whole lines the cut file still holds, read one by one
        whole = []
        try:
            for raw in f:
                whole.append(raw)
        except EOFError:
            pass
    assert 0 < last < 5000 and last == len([line for line in whole if line.endswith(b"\n")])
