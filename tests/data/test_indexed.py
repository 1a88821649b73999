"""Batched indexed-dataset writes: byte-identical to megatron.core's IndexedDatasetBuilder, read by IndexedDataset."""

from __future__ import annotations

import numpy as np
import pytest

from factory.data.indexed import IndexedDatasetWriter, token_dtype


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_batched_writes_equal_megatron_per_document_writes(tmp_path, dtype):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=200)
    tokens = rng.integers(0, 60000, size=int(lengths.sum())).astype(dtype)
    reference = IndexedDatasetBuilder(str(tmp_path / "one.bin"), dtype=dtype)
    for doc in np.split(tokens, np.cumsum(lengths)[:-1]):
        reference.add_document(doc, [len(doc)])
    reference.finalize(str(tmp_path / "one.idx"))
    writer = IndexedDatasetWriter(tmp_path / "batched", dtype)
    cut = int(lengths[:120].sum())  # two batches: documents 0-119, then the rest
    writer.add_documents(tokens[:cut], lengths[:120])
    writer.add_documents(tokens[cut:], lengths[120:])
    writer.finalize()
    for ext in ("bin", "idx"):
        assert (tmp_path / f"one.{ext}").read_bytes() == (tmp_path / f"batched.{ext}").read_bytes()
    dataset = IndexedDataset(str(tmp_path / "batched"))
    assert len(dataset) == 200 and dataset[7].tolist() == np.split(tokens, np.cumsum(lengths)[:-1])[7].tolist()
    assert token_dtype(65499) == DType.optimal_dtype(65499) and token_dtype(65500) == DType.optimal_dtype(65500)


def test_lengths_that_do_not_add_up_are_refused(tmp_path):
    writer = IndexedDatasetWriter(tmp_path / "x", np.uint16)
    with pytest.raises(ValueError, match="3 tokens but document lengths add up to 2"):
        writer.add_documents(np.array([1, 2, 3]), np.array([2]))
