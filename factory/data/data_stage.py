"""The `data` stage: stream corpora -> quality filters -> dedup -> kept.jsonl + rejected.jsonl (with reasons)."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
from collections import Counter
from itertools import islice
from typing import Callable, Iterable, Iterator

from factory.config_base import CoreConfig
from factory.data.config import DataConfig, DataInput
from factory.data.dedup import Deduper, exact_key, signature
from factory.data.filters import build_filters, first_rejection
from factory.errors import ConfigError
from factory.io import atomic_dir
from factory.manifest import RunManifest
from factory.records import ErrorBudget, Record, read_records
from factory.stage_api import Plan, SectionSpec, Stage

log = logging.getLogger(__name__)
KEPT, REJECTED = "kept.jsonl", "rejected.jsonl"
_STATE: dict = {}  # per worker process: the DataConfig and its two filter chains


def plan(cfg: CoreConfig) -> Plan:
    dc = STAGE.section_of(cfg)
    missing = [f"data.inputs: not found: {i.path}" for i in dc.inputs if not i.path.exists()]
    if missing:
        raise ConfigError(missing)
    out = dc.output_dir or cfg.stage_dir("data")
    return Plan(output_dir=out, reads=[i.path for i in dc.inputs], writes=[out / KEPT, out / REJECTED])


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    from rich.progress import Progress

    dc = STAGE.section_of(cfg)
    counts: Counter[str] = Counter({name: 0 for name in reason_names(dc)})
    with atomic_dir(plan.output_dir) as tmp, open(tmp / KEPT, "w", encoding="utf-8") as kept, \
            open(tmp / REJECTED, "w", encoding="utf-8") as rejected, _screener(dc) as screen, \
            Progress(transient=True) as progress:
        dedup = Deduper(dc.dedup)
        for inp in dc.inputs:
            manifest.add_input(inp.path, role="corpus")
            task = progress.add_task(f"data {inp.path.name}", total=None)
            budget = ErrorBudget(inp.path, dc.max_error_rate, dc.report_errors)
            for rec, verdict, key, hv in screen(_batches(_records(inp, dc), dc.docs_per_task, inp.japanese)):
                budget.count(rec)
                verdict = verdict or dedup.check(key, hv, rec.source)
                _write(kept, rejected, rec, verdict, key)
                counts[verdict[0] if verdict else "kept"] += 1
                progress.advance(task)
            budget.check()
        for f in (kept, rejected):  # durable before atomic_dir renames the folder into place
            f.flush()
            os.fsync(f.fileno())
    _record(manifest, counts)
    for p in plan.writes:
        manifest.add_output(p)


def reason_names(dc: DataConfig) -> list[str]:
    """Every reason a record can be rejected for, so the manifest shows zeros too."""
    names = ["malformed"] + [f.name for f in build_filters(dc, japanese=True)]
    return names + [n for n, on in (("exact_dup", dc.dedup.exact), ("near_dup", dc.dedup.near)) if on]


def _records(inp: DataInput, dc: DataConfig) -> Iterator[Record]:
    return read_records(inp.path, inp.text_field or dc.text_field, inp.format, dc.text_unit, errors="yield")


def _batches(records: Iterator[Record], size: int, japanese: bool) -> Iterator[tuple[list[Record], bool]]:
    while batch := list(islice(records, size)):
        yield batch, japanese


def _init_worker(dc_json: dict) -> None:
    dc = DataConfig.model_validate(dc_json)
    _STATE.update(dc=dc, chains={True: build_filters(dc, True), False: build_filters(dc, False)})


def _screen(task: tuple[list[Record], bool]) -> list[tuple]:
    """Filter verdict, exact key and MinHash values for each record of a batch (runs in a worker)."""
    batch, japanese = task
    dc: DataConfig = _STATE["dc"]
    out = []
    for rec in batch:
        verdict = ("malformed", rec.error) if rec.error else first_rejection(_STATE["chains"][japanese], rec.text)
        keep = verdict is None
        key = exact_key(rec.text) if keep else b""
        hv = signature(rec.text, dc.dedup) if keep and dc.dedup.near else None
        out.append((rec, verdict, key, hv))
    return out


@contextlib.contextmanager
def _screener(dc: DataConfig) -> Iterator[Callable[[Iterable], Iterator[tuple]]]:
    """Yields screen(batches) -> screened records in input order, in-process for one worker."""
    args = (dc.model_dump(mode="json"),)
    if dc.num_workers == 1:
        _init_worker(*args)
        yield lambda batches: (r for b in map(_screen, batches) for r in b)
        return
    with mp.get_context("spawn").Pool(dc.num_workers, initializer=_init_worker, initargs=args) as pool:
        yield lambda batches: (r for b in pool.imap(_screen, batches) for r in b)


def _write(kept, rejected, rec: Record, verdict: tuple[str, str] | None, key: bytes) -> None:
    if verdict is None:
        row = {"id": key.hex(), "text": rec.text, "source": rec.source}
        kept.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    row = {"source": rec.source, "reason": verdict[0], "detail": verdict[1], "text": rec.text}
    rejected.write(json.dumps(row, ensure_ascii=False) + "\n")


def _record(manifest: RunManifest, counts: Counter[str]) -> None:
    kept = counts.pop("kept", 0)
    rejected = sum(counts.values())
    manifest.record(**{"in": kept + rejected, "kept": kept, "rejected": rejected},
                    **{f"rejected.{name}": n for name, n in counts.items()})
    log.info("data: %d in, %d kept, %d rejected (%s)", kept + rejected, kept, rejected,
             ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none")


STAGE = Stage(
    name="data", help="ingest, filter and dedup corpora into JSONL",
    sections=(SectionSpec("data", DataConfig, "Corpora to ingest, filter and dedup into JSONL."),),
    plan=plan, run=run, result_sections=("data",), job_array=True)
