"""Tokenize one input into a Megatron indexed dataset (.bin/.idx), EOD appended, a chunk at a time.

JSONL, the format the data stage writes, takes the fast path (gzipped too): pyarrow parses each chunk of
whole lines for the text field, and any line it cannot read is read again by factory.records' line parser,
which names it. Any other format of the records reader (text, parquet, HF folders) is read through
factory.records. Either way a malformed record stops the stage naming its file:line (pack has no error
budget: the data stage is where records are screened), and a file that cannot be read to its end (a
compressed file cut short) is one line naming the file and the last line read.
gigatoken (BPE) or SentencePiece (unigram) encodes on every core, and one write appends each chunk.
"""

from __future__ import annotations

import codecs
import gzip
from itertools import islice
from pathlib import Path
from typing import Iterator

from factory.data.encode import DocumentEncoder, with_eod
from factory.data.encode import parse_texts
from factory.data.indexed import IndexedDatasetWriter, token_dtype
from factory.errors import DataError
from factory.records import UNREADABLE, detect_format, read_records, unreadable

RECORDS_PER_CHUNK = 4096
"""Records per chunk for the formats that are not JSONL."""


def _chunks(path: Path, size: int) -> Iterator[tuple[int, bytes, int]]:
    """(number of the first line, whole lines of about `size` bytes, bytes of the file read so far). Reads go
    block by block (`read1`), so a file that ends early is named with the last whole line it holds."""
    gz = path.name.lower().endswith(".gz")
    first, pending = 1, b""
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            raw = f.fileobj if gz else f  # progress counts the file's own (compressed) bytes
            while block := f.read1(size):
                pending += block
                cut = pending.rfind(b"\n") + 1 if len(pending) >= size else 0
                if cut:
                    chunk, pending = pending[:cut], pending[cut:]
                    yield first, chunk.removeprefix(codecs.BOM_UTF8) if first == 1 else chunk, raw.tell()
                    first += chunk.count(b"\n")
            if pending:
                yield first, pending.removeprefix(codecs.BOM_UTF8) if first == 1 else pending, raw.tell()
    except UNREADABLE as e:
        lines = first - 1 + pending.count(b"\n")
        raise unreadable(path, e, f"line {lines}" if lines else None) from None


def _text_chunks(path: Path, field: str, task_bytes: int) -> Iterator[tuple[object, int]]:
    """(pyarrow string array of texts, bytes of input it covers) chunk by chunk."""
    import pyarrow as pa


    if detect_format(path) == "jsonl":
        done = 0
        for first, chunk, position in _chunks(path, task_bytes):
            yield parse_texts(chunk, field, str(path), first), position - done
            done = position
        return
    records = read_records(path, field)
    while batch := [r.text for r in islice(records, RECORDS_PER_CHUNK)]:
        yield pa.array(batch, type=pa.string()), sum(len(t) for t in batch)


def pack_records(path: Path, field: str, prefix: Path, model_path: Path, vocab_size: int,
                 eod: int | None, threads: int, task_bytes: int) -> dict[str, int]:
    """Tokenize one input into `prefix.bin/.idx`; returns document and token counts."""
    from rich.progress import Progress


    documents = tokens = 0
    encoder = DocumentEncoder(model_path, threads)
    writer = IndexedDatasetWriter(prefix, token_dtype(vocab_size))
    size = path.stat().st_size if path.is_file() else None
    with Progress(transient=True) as progress:
        task = progress.add_task(f"pack {path.name}", total=size)
        for texts, covered in _text_chunks(path, field, task_bytes):
            batch, lengths = with_eod(*encoder.encode(texts), eod, token_dtype(vocab_size))
            writer.add_documents(batch, lengths)
            documents += len(lengths)
            tokens += batch.size
            progress.update(task, advance=covered)
    writer.finalize()
    if documents == 0:
        raise DataError(f"{path}: no documents to pack")
    return {"documents": documents, "tokens": tokens}
