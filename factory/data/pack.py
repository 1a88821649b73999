"""The `pack` stage: JSONL -> Megatron indexed datasets (.bin/.idx), EOD appended, plus blend.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

from factory.config import FactoryConfig
from factory.errors import ConfigError, DataError
from factory.io import atomic_dir, atomic_write_json
from factory.manifest import RunManifest
from factory.runner import Plan

log = logging.getLogger(__name__)


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
    import sentencepiece as spm

    from factory.data.encode import eod_id

    pc = cfg.pack
    model_path = tokenizer_model_path(cfg)
    try:
        sp = spm.SentencePieceProcessor(model_file=str(model_path))
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"pack: cannot use tokenizer {model_path}: {e}") from None
    eod = eod_id(sp)
    if eod is None and pc.append_eod:
        raise ConfigError(f"pack: cannot use tokenizer {model_path}: it defines neither <EOD> nor </s>")
    manifest.add_input(model_path, role="tokenizer")
    totals: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    with atomic_dir(plan.output_dir) as tmp:
        for ds in pc.datasets:
            manifest.add_input(ds.path, role=f"dataset:{ds.name}")
            totals[ds.name] = pack_jsonl(ds.path, ds.text_field, tmp / f"{ds.name}_text_document",
                                         model_path, sp.vocab_size(), eod if pc.append_eod else None,
                                         pc.num_workers, pc.task_bytes)
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


def _chunks(path: Path, size: int) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, whole lines of about `size` bytes)."""
    with open(path, "rb") as f:
        first = 1
        while chunk := f.read(size):
            if not chunk.endswith(b"\n"):
                chunk += f.readline()
            yield first, chunk
            first += chunk.count(b"\n")


def pack_jsonl(path: Path, field: str, prefix: Path, model_path: Path, vocab_size: int,
               eod: int | None, threads: int, task_bytes: int) -> dict[str, int]:
    """Tokenize one JSONL file into `prefix.bin/.idx`, a chunk of `task_bytes` at a time: pyarrow parses it
    and gigatoken or SentencePiece encodes it on every core (both release the GIL), one write appends it.
    Returns document and token counts."""
    from rich.progress import Progress

    from factory.data.encode import DocumentEncoder, parse_texts, with_eod
    from factory.data.indexed import IndexedDatasetWriter, token_dtype

    documents = tokens = 0
    encoder = DocumentEncoder(model_path, threads)
    writer = IndexedDatasetWriter(prefix, token_dtype(vocab_size))
    with Progress(transient=True) as progress:
        task = progress.add_task(f"pack {path.name}", total=path.stat().st_size)
        for first, chunk in _chunks(path, task_bytes):
            batch, lengths = with_eod(*encoder.encode(parse_texts(chunk, field, str(path), first)), eod,
                                      token_dtype(vocab_size))
            writer.add_documents(batch, lengths)
            documents += len(lengths)
            tokens += batch.size
            progress.update(task, advance=len(chunk))
    writer.finalize()
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
