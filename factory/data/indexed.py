"""Megatron indexed datasets (.bin + .idx, megatron.core's "MMIDIDX" format, version 1) written a batch of
documents at a time with numpy alone, so pack's main process imports neither torch nor megatron.core
(4-20 s on a 2-core machine, more than encoding a 15 MB corpus takes). The files are byte-identical to
megatron.core's IndexedDatasetBuilder's and read by its IndexedDataset (tests/data/test_indexed.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7,
               np.uint16: 8}
"""megatron.core.datasets.indexed_dataset.DType codes."""


def token_dtype(vocab_size: int) -> type:
    """megatron.core's DType.optimal_dtype: uint16 below 65,500 ids, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def token_count(prefix: Path | str) -> int:
    """Tokens in `<prefix>.bin`, from its size and the dtype its `.idx` header names (nothing else is read)."""
    with open(f"{prefix}.idx", "rb") as f:
        header = f.read(len(INDEX_HEADER) + 9)
    code = header[-1]
    dtype = next(t for t, c in DTYPE_CODES.items() if c == code)
    return Path(f"{prefix}.bin").stat().st_size // np.dtype(dtype).itemsize


class IndexedDatasetWriter:
    """Appends documents (one sequence each) to `<prefix>.bin`; `finalize` writes `<prefix>.idx`."""

    def __init__(self, prefix: Path, dtype: type):
        self.prefix, self.dtype = Path(prefix), dtype
        self._bin = open(f"{prefix}.bin", "wb")
        self._lengths: list[np.ndarray] = []

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append `tokens` (documents back to back) in one write; `lengths` holds each document's size."""
        if int(lengths.sum()) != tokens.size:
            raise ValueError(f"{self.prefix}: {tokens.size} tokens but document lengths add up to {lengths.sum()}")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._lengths.append(np.asarray(lengths, dtype=np.int32))

    def finalize(self) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(self.dtype).itemsize, out=pointers[1:])
        documents = np.arange(len(lengths) + 1, dtype=np.int64)  # document i is sequence i
        with open(f"{self.prefix}.idx", "wb") as f:
            f.write(INDEX_HEADER + struct.pack("<Q", INDEX_VERSION) + struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(documents)))
            f.write(lengths.tobytes() + pointers.tobytes() + documents.tobytes())
