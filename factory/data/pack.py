"""Tokenize records into one Megatron indexed dataset (.bin/.idx) in worker processes, EOD appended."""

from __future__ import annotations

import logging
import multiprocessing as mp
from itertools import chain, islice
from pathlib import Path
from typing import Iterator

import numpy as np

from factory.errors import DataError
from factory.records import read_records

log = logging.getLogger(__name__)
_SP = None  # the worker's SentencePiece processor
_JOB = None  # the worker's (EOD id or None, token dtype)


def _text_batches(path: Path, field: str, size: int) -> Iterator[list[str]]:
    """Texts of one input (any format the records reader takes), `size` at a time; bad records stop with file:line."""
    records = read_records(path, field)
    while batch := [r.text for r in islice(records, size)]:
        yield batch


def _init_worker(model_path: str, eod: int | None, dtype: type) -> None:
    import sentencepiece as spm

    global _SP, _JOB
    _SP = spm.SentencePieceProcessor(model_file=model_path)
    _JOB = (eod, dtype)


def _encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize a batch of documents; returns all its tokens (EOD appended) and each document's length."""
    eod, dtype = _JOB
    docs = [ids for ids in _SP.encode(texts, num_threads=1) if ids]  # empty text: nothing to learn, not even an EOD
    if eod is not None:
        for ids in docs:
            ids.append(eod)
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    tokens = np.fromiter(chain.from_iterable(docs), dtype=dtype, count=int(lengths.sum()))
    return tokens, lengths


def pack_records(path: Path, field: str, prefix: Path, model_path: Path, vocab_size: int,
                 eod: int | None, workers: int, docs_per_task: int) -> dict[str, int]:
    """Tokenize one input into `prefix.bin/.idx`; returns document and token counts."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from rich.progress import Progress

    dtype = DType.optimal_dtype(vocab_size)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    documents = tokens = 0
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker,
                  initargs=(str(model_path), eod, dtype)) as pool, \
            Progress(transient=True) as progress:
        task = progress.add_task(f"pack {path.name} (documents)", total=None)
        for batch, lengths in pool.imap(_encode, _text_batches(path, field, docs_per_task)):
            offset = 0
            for n in lengths.tolist():
                builder.add_document(batch[offset:offset + n], [n])
                offset += n
            documents += len(lengths)
            tokens += batch.size
            progress.update(task, advance=len(lengths))
    builder.finalize(f"{prefix}.idx")
    if documents == 0:
        raise DataError(f"{path}: no documents to pack")
    return {"documents": documents, "tokens": tokens}
