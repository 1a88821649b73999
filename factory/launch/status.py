"""`python -m factory.launch status --config FILE`: a run's Slurm chain as one table (stage, job, Slurm state,
pipeline record, restarts, elapsed, last checkpoint, log), from squeue (sacct for jobs slurmctld has
forgotten), chain.json and pipeline.json.

Exit code 0 when every stage of the chain is done (the report is then written, unless it is newer than the
records), 1 when one failed, was cancelled or stopped (the jobs still waiting for it are cancelled, with one
line naming it and its log), 3 while jobs are pending or running. The chain's jobs run it too: each job after
its stage (`--job-ended STAGE`: exit 0 when the stage is done, else cancel what waits for it), and the report
job last.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import chain_record, slurm_queue
from factory import registry
from factory.chain_record import REPORT
from factory.config_base import CoreConfig
from factory.decisions import output_folder
from factory.errors import ConfigError
from factory.report import write_report
from factory.run_state import STATE_NAME, load_state
from factory.stage_api import Launch

DONE, FAILED, WAITING = "done", "failed", "waiting"
EXIT = {DONE: 0, FAILED: 1, WAITING: 3}


@dataclass
class Row:
    """One job of the chain as Slurm and the run's records see it."""

    stage: str
    entry: dict[str, Any]
    job: slurm_queue.Job | None
    record: dict[str, Any] | None
    """The stage's pipeline.json record when this job wrote it (started after the job was submitted)."""
    outcome: str


def rows(cfg: CoreConfig, chain: dict[str, Any], ended: str | None = None) -> list[Row]:
    """Every job of the chain in chain order, the report last; `ended` is the stage whose job asks."""
    entries = chain["jobs"]
    jobs = slurm_queue.jobs([e["job_id"] for e in entries.values()]) if slurm_queue.available() else {}
    records = load_state(cfg.run.dir)["stages"]
    out = []
    for stage in [*(s.name for s in registry.CHAIN if s.name in entries), *([REPORT] if REPORT in entries else [])]:
        entry, job = entries[stage], jobs.get(entries[stage]["job_id"])
        record = _own_record(entry, records.get(stage))
        out.append(Row(stage, entry, job, record, _outcome(stage == ended, job, record, stage == REPORT)))
    return out


def _own_record(entry: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any] | None:
    """`record` when the job of `entry` wrote it (it started after the submission), else None."""
    return record if record and record.get("started_at", "") >= entry.get("submitted_at", "") else None


def _outcome(asking: bool, job: slurm_queue.Job | None, record: dict[str, Any] | None, report: bool = False) -> str:
    status = "done" if report else (record or {}).get("status")  # the report job keeps no record
    if asking:
        return DONE if status == "done" else FAILED
    if job is not None and not job.ended:
        return WAITING
    if status == "done" and (job is None or job.state == "COMPLETED"):
        return DONE
    if job is None and not slurm_queue.available() and status not in ("failed", "stopped", "interrupted"):
        return WAITING  # nothing here can say whether it ran
    return FAILED


def table(cfg: CoreConfig, rows: list[Row]) -> str:
    head = ("stage", "job", "state", "record", "restarts", "elapsed", "checkpoint", "log")
    body = [(r.stage, r.entry["job_id"], _state(r), (r.record or {}).get("status", "-"),
             str(r.job.restarts) if r.job and r.job.restarts is not None else "-", _elapsed(r),
             checkpoint(cfg, r.stage), r.entry["log"]) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [head, *body])


def _state(row: Row) -> str:
    if row.job is None:
        return "gone from Slurm" if slurm_queue.available() else "-"
    return row.job.state + (f" ({row.job.reason})" if row.job.state == "PENDING" and row.job.reason else "")


def _elapsed(row: Row) -> str:
    if row.job is not None and row.job.elapsed:
        return row.job.elapsed
    seconds = (row.record or {}).get("wall_seconds")
    return f"{seconds:.0f}s" if seconds is not None else "-"


def checkpoint(cfg: CoreConfig, stage: str) -> str:
    """`<iteration> (<tokens seen> tokens)` of a training stage's latest checkpoint, or `-`."""
    spec = registry.STAGES.get(stage)
    if spec is None or spec.launch is not Launch.MEGATRON or not spec.configured(cfg):
        return "-"
    folder = output_folder(cfg, stage)
    if not (folder / "checkpoints").is_dir():
        return "-"
    from factory.train.checkpoint import latest_iteration  # torch: only for a training stage with checkpoints

    iteration = latest_iteration(folder / "checkpoints")
    if iteration is None:
        return "-"
    return f"{iteration} ({_tokens(folder / 'metrics.jsonl', iteration)} tokens)"


def _tokens(metrics: Path, iteration: int) -> str:
    """Tokens seen at `iteration` by the training log (the last record at or before it)."""
    seen = "?"
    for line in metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("iteration", iteration + 1) <= iteration and "tokens" in record:
            seen = f"{record['tokens']:,}"
    return seen


def _waiting_for(chain: dict[str, Any], stage: str) -> list[str]:
    """The chain's stages (and report) that wait for `stage`, directly or through others."""
    out: list[str] = []
    frontier = [stage]
    while frontier:
        current = frontier.pop()
        for name, entry in chain["jobs"].items():
            if current in entry.get("after", []) and name not in out:
                out.append(name)
                frontier.append(name)
    return out


def cancel_waiting(chain: dict[str, Any], rows: list[Row]) -> list[str]:
    """Cancel the pending jobs that wait for a failed stage; one line per stage that failed first, naming its
    job, its log and the jobs that waited for it."""
    by_stage = {r.stage: r for r in rows}
    failed = {r.stage for r in rows if r.outcome == FAILED}
    lines = []
    for row in rows:
        if row.outcome != FAILED or any(a in failed for a in row.entry.get("after", [])):
            continue  # it waited for a stage that failed before it
        waiting = [by_stage[s] for s in _waiting_for(chain, row.stage) if s in by_stage]
        stopped = [r for r in waiting if r.job is not None and r.job.state in ("PENDING", "CANCELLED")]
        slurm_queue.cancel([r.entry["job_id"] for r in stopped if r.job.state == "PENDING"])
        lines.append(_failure_line(row, stopped))
    return lines


def _failure_line(row: Row, cancelled: list[Row]) -> str:
    status = (row.record or {}).get("status") or "did not finish"
    state = f"{row.job.state}, " if row.job else ""
    error = f": {row.record['error']}" if (row.record or {}).get("error") else ""
    jobs = ", ".join(f"{r.stage} (job {r.entry['job_id']})" for r in cancelled)
    return (f"stage {row.stage} {status} (job {row.entry['job_id']}, {state}log {row.entry['log']}){error}"
            + (f"; cancelled the jobs that waited for it: {jobs}" if cancelled else ""))


def show_status(args: argparse.Namespace, cfg: CoreConfig) -> int:
    """Print the chain's table; cancel what waits for a failed stage; write the report once all is done."""
    chain = chain_record.load(cfg.run.dir)
    if not chain["jobs"]:
        raise ConfigError(f"{cfg.run.dir / chain_record.CHAIN_NAME}: no chain was submitted for this run "
                          "(python -m factory.launch slurm pipeline --config FILE --submit)")
    ended = args.job_ended
    if ended is not None and ended in chain["jobs"]:
        record = _own_record(chain["jobs"][ended], load_state(cfg.run.dir)["stages"].get(ended))
        if (record or {}).get("status") == "done":
            print(f"stage {ended}: done; the chain goes on")
            return 0
    found = rows(cfg, chain, ended)
    print(table(cfg, found))
    for line in cancel_waiting(chain, found):
        print(f"error: {line}", file=sys.stderr)
    stages = [r.outcome for r in found if r.stage != REPORT]
    outcome = FAILED if FAILED in stages else WAITING if WAITING in stages else DONE
    if outcome == DONE:
        print(f"report: {_report(cfg)}")
    if outcome != WAITING and slurm_queue.available() and not chain_record.still_queued(cfg.run.dir):
        chain_record.mark_ended(cfg.run.dir)
    return EXIT[outcome]


def _report(cfg: CoreConfig) -> Path:
    """The run report, written again when pipeline.json changed after it."""
    path = cfg.run.dir / "report" / "report.md"
    if path.is_file() and path.stat().st_mtime >= (cfg.run.dir / STATE_NAME).stat().st_mtime:
        return path
    return write_report(cfg)
