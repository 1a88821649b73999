"""The `pack` stage: JSONL -> Megatron indexed datasets (.bin/.idx), EOD appended, plus blend.json."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from itertools import chain, islice
from pathlib import Path
from typing import Iterator

import numpy as np

from factory.config import FactoryConfig
from factory.errors import ConfigError, DataError
from factory.io import atomic_dir, atomic_write_json
from factory.manifest import RunManifest
from factory.runner import Plan

log = logging.getLogger(__name__)
_SP = None  # the worker's SentencePiece processor
_JOB = None  # the worker's (path, text field, EOD id or None, token dtype)


def plan(cfg: FactoryConfig) -> Plan:
    pc = cfg.pack
    if pc is None:
        raise ConfigError("pack: the config has no 'pack' section")
    out = pc.output_dir or cfg.stage_dir("pack")
    model = tokenizer_model_path(cfg)
    reads = [model] + [d.path for d in pc.datasets]
    missing = [str(p) for p in reads if not p.is_file()]
    if missing:
        raise ConfigError([f"pack: input not found: {m}" for m in missing])
    writes = [out / f"{d.name}_text_document.{ext}" for d in pc.datasets for ext in ("bin", "idx")]
    if cfg.blend is not None:
        writes.append(out / "blend.json")
    return Plan(output_dir=out, reads=reads, writes=writes)


def tokenizer_model_path(cfg: FactoryConfig) -> Path:
    return (cfg.pack.tokenizer_dir or cfg.stage_dir("tokenizer")) / "tokenizer.model"


def run(cfg: FactoryConfig, plan: Plan, manifest: RunManifest) -> None:
    from factory.data.megatron_tokenizer import SentencePieceMegatronTokenizer

    pc = cfg.pack
    model_path = tokenizer_model_path(cfg)
    try:
        tok = SentencePieceMegatronTokenizer(model_path)
    except (ValueError, OSError, RuntimeError) as e:
        raise ConfigError(f"pack: cannot use tokenizer {model_path}: {e}") from None
    manifest.add_input(model_path, role="tokenizer")
    totals: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    with atomic_dir(plan.output_dir) as tmp:
        for ds in pc.datasets:
            manifest.add_input(ds.path, role=f"dataset:{ds.name}")
            totals[ds.name] = pack_jsonl(ds.path, ds.text_field, tmp / f"{ds.name}_text_document",
                                         model_path, tok.vocab_size, tok.eod if pc.append_eod else None,
                                         pc.num_workers, pc.docs_per_task)
        atomic_write_json(tmp / "token_counts.json", totals)
        if cfg.blend is not None:
            atomic_write_json(tmp / "blend.json", resolve_blend(cfg, plan.output_dir, totals))
    seconds = time.perf_counter() - t0
    tokens = sum(t["tokens"] for t in totals.values())
    for name, t in totals.items():
        manifest.record(**{f"{name}.documents": t["documents"], f"{name}.tokens": t["tokens"]})
    manifest.record(tokens=tokens, documents=sum(t["documents"] for t in totals.values()),
                    seconds=round(seconds, 3), tokens_per_s=round(tokens / max(seconds, 1e-9)))
    for p in plan.writes:
        manifest.add_output(p)
    log.info("pack: %d tokens in %.1fs (%.0f tokens/s)", tokens, seconds, tokens / max(seconds, 1e-9))


def _parse(path: str, field: str, lineno: int, line: str) -> str:
    try:
        text = json.loads(line)[field]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}:{lineno}: expected a JSON object with a '{field}' string ({e})") from None
    if not isinstance(text, str):
        raise DataError(f"{path}:{lineno}: '{field}' is {type(text).__name__}, expected a string")
    return text


def _line_batches(path: Path, size: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, raw lines): JSON is parsed in the workers, not here."""
    with open(path, encoding="utf-8") as f:
        first = 1
        while lines := list(islice(f, size)):
            yield first, lines
            first += len(lines)


def _init_worker(model_path: str, path: str, field: str, eod: int | None, dtype: type) -> None:
    import sentencepiece as spm

    global _SP, _JOB
    _SP = spm.SentencePieceProcessor(model_file=model_path)
    _JOB = (path, field, eod, dtype)


def _encode(task: tuple[int, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Parse and tokenize a batch of lines; returns all its tokens (EOD appended) and each document's length."""
    path, field, eod, dtype = _JOB
    first, lines = task
    texts = [_parse(path, field, lineno, line) for lineno, line in enumerate(lines, first) if line.strip()]
    docs = [ids for ids in _SP.encode(texts, num_threads=1) if ids]  # empty text: nothing to learn, not even an EOD
    if eod is not None:
        for ids in docs:
            ids.append(eod)
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    tokens = np.fromiter(chain.from_iterable(docs), dtype=dtype, count=int(lengths.sum()))
    return tokens, lengths


def pack_jsonl(path: Path, field: str, prefix: Path, model_path: Path, vocab_size: int,
               eod: int | None, workers: int, docs_per_task: int) -> dict[str, int]:
    """Tokenize one JSONL file into `prefix.bin/.idx`; returns document and token counts."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from rich.progress import Progress

    dtype = DType.optimal_dtype(vocab_size)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    documents = tokens = 0
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker,
                  initargs=(str(model_path), str(path), field, eod, dtype)) as pool, \
            Progress(transient=True) as progress:
        task = progress.add_task(f"pack {path.name} (documents)", total=None)
        for batch, lengths in pool.imap(_encode, _line_batches(path, docs_per_task)):
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


def resolve_blend(cfg: FactoryConfig, out_dir: Path, totals: dict[str, dict[str, int]]) -> dict:
    """Megatron blend spec per phase: path prefixes and normalized weights (repeat -> tokens x repeat)."""
    phases = []
    for phase in cfg.blend.phases:
        raw = [e.weight if e.weight is not None else totals[e.dataset]["tokens"] * e.repeat
               for e in phase.datasets]
        total = sum(raw)
        phases.append({
            "name": phase.name,
            "prefixes": [str(out_dir / f"{e.dataset}_text_document") for e in phase.datasets],
            "weights": [w / total for w in raw],
        })
    return {"phases": phases}
