"""The data stage's datatrove blocks: the corpus reader, the factory's filters, shard readers and writers, shingles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.jsonl import JsonlWriter
from datatrove.utils.word_tokenizers import WhitespaceTokenizer

from factory.data.config import DataConfig
from factory.data.dedup import exact_key, normalize
from factory.data.filters import Filter, build_filters
from factory.errors import DataError
from factory.records import read_records

MAX_PRIORITY = 65535
"""datatrove's exact dedup keeps the copy with the highest priority (1..65535): earlier inputs rank higher."""


class CorpusReader(PipelineStep):
    """Task i reads input i with factory.records (file:line sources, every field kept, bad bytes reported).

    An input it cannot read to its end (factory.records raises one DataError line) ends the task's stream and
    is written to `failures/<rank>.txt`; the stage stops with that line after the step (an exception would
    print datatrove's traceback from the worker instead)."""

    type = "📖 - READER"
    name = "corpus"

    def __init__(self, inputs: list[dict[str, Any]], text_unit: str, failures: Path):
        super().__init__()
        self.inputs, self.text_unit, self.failures = inputs, text_unit, Path(failures)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        spec = self.inputs[rank]
        priority = max(1, MAX_PRIORITY - rank)
        records = read_records(spec["path"], spec["text_field"], spec["format"], self.text_unit, errors="yield")
        try:
            for n, rec in enumerate(records):
                self.stat_update("documents")
                meta = {"source": rec.source, "fields": rec.data, "japanese": spec["japanese"],
                        "text_field": spec["text_field"], "priority": priority}
                if rec.error:
                    meta.update(reason="encoding" if rec.reason == "encoding" else "malformed", detail=rec.error)
                yield Document(text=rec.text or "", id=f"{rank}/{n}", metadata=meta)
        except DataError as e:
            self.failures.mkdir(parents=True, exist_ok=True)
            (self.failures / f"{rank:05d}.txt").write_text(f"{e}\n", encoding="utf-8")


class WellFormed(BaseFilter):
    """Rejects the records the reader could not decode or parse, as `encoding` or `malformed`."""

    name = "well-formed"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = doc.metadata.get("reason")
        return (False, reason) if reason else True


class FactoryFilter(BaseFilter):
    """One of factory.data.filters as a datatrove filter; built in the worker (the detector holds MeCab)."""

    def __init__(self, data_config: dict[str, Any], index: int, name: str, japanese_only: bool, exclusion_writer):
        super().__init__(exclusion_writer)
        self.data_config, self.index, self.name, self.japanese_only = data_config, index, name, japanese_only
        self._check: Filter | None = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.japanese_only and not doc.metadata["japanese"]:
            return True
        if self._check is None:
            self._check = build_filters(DataConfig.model_validate(self.data_config), japanese=True)[self.index]
        detail = self._check(doc.text)
        if detail is None:
            return True
        doc.metadata.update(reason=self.name, detail=detail)
        return False, self.name


def filter_blocks(data_config: DataConfig, rejected: Path) -> list[BaseFilter]:
    """The factory's filter chain, cheapest first; the Japanese-only ones skip inputs with `japanese: false`."""
    everywhere = {f.name for f in build_filters(data_config, japanese=False)}
    config = data_config.model_dump(mode="json")
    return [FactoryFilter(config, i, f.name, f.name not in everywhere, RejectedWriter(rejected))
            for i, f in enumerate(build_filters(data_config, japanese=True))]


class RejectedWriter(JsonlWriter):
    """Writes `{"source", "reason", "detail", "text"}` to `<reason>/<rank>.jsonl`; a fixed reason for dedup steps."""

    name = "rejected"

    def __init__(self, folder: Path, reason: str | None = None, detail: str = ""):
        super().__init__(str(folder), output_filename=f"{reason or '${reason}'}/${{rank}}.jsonl", compression=None)
        self.reason, self.detail = reason, detail

    def _default_adapter(self, document: Document) -> dict:
        meta = document.metadata
        return {"source": meta["source"], "reason": self.reason or meta["reason"],
                "detail": self.detail.format(**meta) if self.reason else meta["detail"], "text": document.text}


class KeptWriter(JsonlWriter):
    """Writes kept records as `{"id", ...input fields, "text", "source"}` to `<rank>.jsonl`."""

    name = "kept"

    def __init__(self, folder: Path):
        super().__init__(str(folder), output_filename="${rank}.jsonl", compression=None)

    def _default_adapter(self, document: Document) -> dict:
        meta = document.metadata
        fields = {k: v for k, v in (meta["fields"] or {}).items() if k != meta["text_field"]}
        record_id = fields.pop("id", None)
        return {"id": exact_key(document.text).hex() if record_id is None else record_id, **fields,
                "text": document.text, "source": meta["source"]}


def shard_writer(folder: Path) -> JsonlWriter:
    """Intermediate documents of one task, read back by the next step with `ShardReader`."""
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None)


class ShardReader(PipelineStep):
    """Reads back what task `rank` of the previous step wrote (`<rank>.jsonl`), in order; none if it wrote none."""

    type = "📖 - READER"
    name = "shard"

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = self.folder / f"{rank:05d}.jsonl"
        if not path.exists():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                yield Document(text=row.get("text", ""), id=row["id"], metadata=row["metadata"])


def normalized_text(doc: Document) -> bytes:
    """What exact dedup compares (factory.data.dedup.normalize), as bytes (datatrove hashes bytes as they are)."""
    return normalize(doc.text).encode("utf-8")


def input_priority(doc: Document) -> int:
    return doc.metadata["priority"]


class CharacterMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature step over character shingles of the normalized, space-free text
    (Japanese has no spaces between words, so word n-grams would not work)."""

    def __init__(self, output_folder: str, config: MinhashConfig):
        super().__init__(output_folder, config, language=WhitespaceTokenizer())  # its word tokenizer is unused

    def get_shingles(self, text: str) -> np.ndarray:
        flat = "".join(normalize(text).split())
        k = self.config.n_grams
        grams = {flat[i:i + k] for i in range(max(1, len(flat) - k + 1))} if flat else set()
        return np.fromiter((self._hash_func(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams)).reshape((-1, 1))
