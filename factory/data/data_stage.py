"""The `data` stage on datatrove: read corpora -> quality filters -> exact + MinHash dedup -> kept + rejected JSONL."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from factory import outputs
from factory import sbatch
from factory.config_base import CoreConfig
from factory.data.config import DataConfig
from factory.data.filters import build_filters
from factory.data.shards import (
    BAD_RECORDS,
    UnreadableInput,
    first_bad_records,
    merge,
    raise_failure,
    shard_counts,
    work_dir,
)
from factory.errors import ConfigError, DataError
from factory.io import atomic_dir
from factory.manifest import RunManifest
from factory.records import read_records
from factory.stage_api import Plan, SectionSpec, Stage

log = logging.getLogger(__name__)
KEPT, REJECTED = "kept.jsonl", "rejected.jsonl"


def plan(cfg: CoreConfig) -> Plan:
    data_config = STAGE.section_of(cfg)
    missing = [f"data.inputs: not found: {i.path}" for i in data_config.inputs if not i.path.exists()]
    if missing:
        raise ConfigError(missing)
    out = outputs.data(cfg).dir
    if data_config.executor == "slurm" and not sbatch.is_plain(str(out.resolve())):
        key = "data.output_dir" if data_config.output_dir else "run.dir"
        raise ConfigError(f"{key}: {out.resolve()} holds a blank or a shell character; datatrove's Slurm executor "
                          "writes the work folder beside it into job scripts unquoted (use a plain path, or "
                          "data.executor=local)")
    return Plan(output_dir=out, reads=[i.path for i in data_config.inputs], writes=[out / KEPT, out / REJECTED])


def run(cfg: CoreConfig, plan: Plan, manifest: RunManifest) -> None:
    from factory.data.steps import data_steps  # datatrove is imported only by a data run

    data_config = STAGE.section_of(cfg)
    for inp in data_config.inputs:
        manifest.add_input(inp.path, role="corpus")
        next(read_records(inp.path, inp.text_field or data_config.text_field, inp.format, data_config.text_unit,
                          errors="yield"), None)
    work = work_dir(plan.output_dir, data_config)
    steps = data_steps(data_config, work)
    reasons = reason_names(data_config)
    try:
        if data_config.executor == "slurm":
            _run_slurm(steps, work, data_config)
        else:
            from factory.data.executors import run_local

            run_local(steps, work, data_config.num_workers)
        per_input = shard_counts(work, len(data_config.inputs), reasons)
        _check(data_config, work, per_input)
    except (UnreadableInput, RejectedTooMany):
        shutil.rmtree(work)  # the same inputs and config would fail the same way
        raise
    with atomic_dir(plan.output_dir) as tmp:
        merge(work, len(data_config.inputs), reasons, tmp / KEPT, tmp / REJECTED)
    shutil.rmtree(work)
    totals: Counter[str] = Counter({r: 0 for r in reasons})
    for count in per_input:
        totals.update(count)  # update, not +, which drops the zeros the manifest shows
    _record(manifest, totals)
    for p in plan.writes:
        manifest.add_output(p)


def reason_names(data_config: DataConfig) -> list[str]:
    """Every reason a record can be rejected for, so the manifest shows zeros too."""
    names = [*BAD_RECORDS] + [f.name for f in build_filters(data_config, japanese=True)]
    return names + [n for n, on in (("exact_dup", data_config.dedup.exact), ("near_dup", data_config.dedup.near)) if on]


class RejectedTooMany(DataError):
    """More malformed records than `max_error_rate` allows, or nothing kept."""


def _check(data_config: DataConfig, work: Path, per_input: list[Counter[str]]) -> None:
    """Malformed share per input within `max_error_rate`; something in and kept unless `allow_empty`."""
    for rank, (inp, count) in enumerate(zip(data_config.inputs, per_input)):
        bad, total = sum(count[r] for r in BAD_RECORDS), sum(count.values())
        first = first_bad_records(work, rank, data_config.report_errors or 1)
        for row in first[:data_config.report_errors]:
            log.warning("malformed record %s: %s", row["source"], row["detail"])
        if total and bad / total > data_config.max_error_rate:
            raise RejectedTooMany(f"{inp.path}: {bad} of {total} records malformed ({bad / total:.1%} > "
                            f"data.max_error_rate {data_config.max_error_rate:.1%}); first: {first[0]['source']}: "
                            f"{first[0]['detail']}")
    total = sum(sum(c.values()) for c in per_input)
    kept = sum(c["kept"] for c in per_input)
    if not data_config.allow_empty and (total == 0 or kept == 0):
        what = "no records in" if total == 0 else f"none of {total} records kept"
        inputs = ", ".join(str(i.path) for i in data_config.inputs)
        raise RejectedTooMany(f"data: {what} ({inputs}); set data.allow_empty=true to accept an empty result")


def _run_slurm(steps: list, work: Path, data_config: DataConfig) -> None:
    """Submit one job array per step (each after the one before), wait for the last, then publish here."""
    from factory.data.executors import slurm_executors, submit_slurm

    s = data_config.slurm
    executors = slurm_executors(steps, work, partition=s.partition, time=s.time, cpus_per_task=s.cpus_per_task,
                                mem_per_cpu_gb=s.mem_per_cpu_gb, env_command=s.env_command,
                                sbatch_args=s.sbatch_args, job_name="data")
    ids = submit_slurm(executors)
    log.info("data: submitted Slurm jobs %s", ", ".join(ids) or "none (every task done)")
    while ids and subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True, check=False,
                                 text=True).stdout.strip():
        time.sleep(s.poll_seconds)
    raise_failure(work)
    for step, executor in zip(steps, executors):
        if missing := executor.get_incomplete_ranks():
            raise DataError(f"data: Slurm step {step.name} left tasks {missing} unfinished (logs: "
                            f"{work / 'slurm_logs' / step.name}); rerun to continue them")


def _record(manifest: RunManifest, counts: Counter[str]) -> None:
    kept = counts.pop("kept", 0)
    rejected = sum(counts.values())
    manifest.record(**{"in": kept + rejected, "kept": kept, "rejected": rejected},
                    **{f"rejected.{name}": n for name, n in counts.items()})
    log.info("data: %d in, %d kept, %d rejected (%s)", kept + rejected, kept, rejected,
             ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none")


def _local_workers(data_config: DataConfig) -> int:
    """The local executor's workers; with `executor: slurm` the process only submits and watches job arrays."""
    return data_config.num_workers if data_config.executor == "local" else 1


STAGE = Stage(
    name="data", help="ingest, filter and dedup corpora into JSONL (datatrove)",
    sections=(SectionSpec("data", DataConfig, "Corpora to ingest, filter and dedup into JSONL."),),
    plan=plan, run=run, outputs=outputs.data, result_sections=("data",), job_array=True,
    cpus=lambda cfg: _local_workers(STAGE.section_of(cfg)))
