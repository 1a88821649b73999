"""`python -m factory.launch slurm pipeline --config FILE`: the pipeline as a chain of Slurm jobs.

One job per stage that the pipeline would run (the same decisions from the same pipeline.json:
factory/decisions.py), each with its stage's resources (`launch.stages.<stage>` over `launch`), submitted with
`--dependency=afterok:` on the jobs of the stages it reads from (the registry's `after`), so independent
stages run side by side; then a report job after all of them. Each job runs `python -m factory.pipeline --job
STAGE`, which records the stage in pipeline.json as the in-process pipeline does. A stage already queued or
running for this run (squeue, by job name) keeps its job. Nothing is deleted: `--fresh STAGE` moves the
earlier output aside when the chain is submitted.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory import chain_record, slurm_queue
from factory import registry
from factory.chain_record import REPORT, job_name
from factory.config_base import CoreConfig
from factory.decisions import Decision, decide_and_check, output_folder, training_plans
from factory.decisions import describe as describe_decisions
from factory.errors import ConfigError, OutputError
from factory.io import atomic_write_text, move_aside, os_error_line
from factory.launch.commands import pipeline_job_args, status_args
from factory.launch.slurm import ChainStep, job_gpus, render, render_report, stage_launch
from factory.launch_config import LaunchConfig
from factory.lock import FolderLock
from factory.pipeline import LOCK_NAME
from factory.run_state import now
from factory.stage_api import Launch

REPORT_TIME = "00:30:00"
"""Time limit of the report job (one process reading the run's artifacts)."""
NEVER = "DependencyNeverSatisfied"
"""squeue's reason for a job that waits for a job that failed: it would pend forever."""


@dataclass
class ChainJob:
    """One job of the chain: a stage that runs (or the report), the stages it waits for, how it starts."""

    stage: str
    name: str
    reason: str
    after: list[str]
    resources: str
    script: str
    log_dir: Path
    kept: slurm_queue.Job | None = None
    """The job already queued or running for this stage, which the chain keeps instead of a second one."""
    start_over: bool = False
    job_id: str | None = None
    moved_aside: str | None = None

    def entry(self) -> dict[str, Any]:
        """The job as chain.json records it."""
        log = self.log_dir / f"{self.name}-{self.job_id}.out"
        out = {"job_id": self.job_id, "job_name": self.name, "log": str(log), "after": self.after,
               "reason": self.reason, "submitted_at": now()}
        return out | ({"moved_aside": self.moved_aside} if self.moved_aside else {})


@dataclass
class Chain:
    """The pipeline's decisions, the jobs that carry them out (the report job last; none when nothing runs), and
    the run's queued jobs that wait for a job that failed (cancelled on submission: they would pend forever)."""

    decisions: list[Decision]
    jobs: list[ChainJob]
    dead: list[slurm_queue.Job]
    unchecked: str = ""
    """Why the run's queued jobs were not looked for (a dry run away from Slurm)."""


def plan_chain(cfg: CoreConfig, config: str, overrides: list[str], start: str | None = None, only: str | None = None,
               fresh: set[str] | frozenset[str] = frozenset(), dry_run: bool = False) -> Chain:
    """The chain for these pipeline options; a ConfigError naming every job that cannot run. A dry run goes on
    without the queue when squeue is missing or fails."""
    if cfg.launch is not None and cfg.launch.array is not None:
        raise ConfigError("launch.array: a chain runs each stage as one job recorded in pipeline.json; run arrays "
                          "stage by stage (python -m factory.launch slurm STAGE), or let the data stage submit its "
                          "own (data.executor: slurm)")
    decisions, _, start_over = decide_and_check(cfg, start, only, fresh)
    names = {name: job_name(cfg, name) for name in [*(d.stage for d in decisions), REPORT]}
    found, unchecked = {}, ""
    try:
        found = slurm_queue.queued(list(names.values()))
    except slurm_queue.SlurmError as e:
        if not dry_run:
            raise
        unchecked = f"jobs already queued for this run were not looked for: {e}"
    dead = [job for job in found.values() if job.reason == NEVER]
    queued = {name: job for name, job in found.items() if job.reason != NEVER}
    generated = shlex.join(["python", "-m", "factory.launch", "slurm", "pipeline", "--config", config, *overrides])
    jobs: list[ChainJob] = []
    problems: list[str] = []
    for d in decisions:
        kept = queued.get(names[d.stage])
        if d.action != "run" and kept is None:
            continue
        launch = stage_launch(cfg, d.stage)
        step = ChainStep(names[d.stage], pipeline_job_args(d.stage, config, overrides),
                         status_args(config, overrides, ended=d.stage), generated)
        try:
            script = render(cfg, d.stage, config, overrides, step).script
        except ConfigError as e:
            problems += [f"{d.stage}: {p}" for p in e.problems]
            continue
        after = [a for a in registry.STAGES[d.stage].after if any(j.stage == a for j in jobs)]
        jobs.append(ChainJob(d.stage, names[d.stage], d.reason, after, resources(cfg, d.stage, launch), script,
                             _log_dir(cfg, launch), kept, d.stage in start_over))
    if problems:
        raise ConfigError(problems)
    if jobs:
        jobs.append(_report_job(cfg, config, overrides, names[REPORT], [j.stage for j in jobs], generated,
                                queued.get(names[REPORT])))
    return Chain(decisions, jobs, dead, unchecked)


def _report_job(cfg: CoreConfig, config: str, overrides: list[str], name: str, after: list[str], generated: str,
                kept: slurm_queue.Job | None) -> ChainJob:
    launch = (cfg.launch or LaunchConfig()).model_copy(update={
        "time": REPORT_TIME, "cpus_per_task": None, "gpus_per_node": 0, "requeue": False, "stages": {}})
    script = render_report(cfg, launch, name, status_args(config, overrides), generated)
    return ChainJob(REPORT, name, "the run report, after the chain", after, resources(cfg, REPORT, launch), script,
                    _log_dir(cfg, launch), kept)


def _log_dir(cfg: CoreConfig, launch: LaunchConfig) -> Path:
    return launch.output_dir or cfg.run.dir / "logs"


def resources(cfg: CoreConfig, stage: str, launch: LaunchConfig) -> str:
    """What the job asks Slurm for, in words."""
    where = [f"partition {launch.partition}"] if launch.partition else []
    where.append(f"time {launch.time}")
    if stage != REPORT and registry.stage(stage).launch is not Launch.ONE_PROCESS:
        n, g, p = launch.nodes, launch.gpus_per_node, launch.processes_per_node
        per = f"{g} GPUs ({p} processes)" if g else f"{p} CPU process{'es' if p > 1 else ''}"
        whole = [", whole nodes"] if launch.whole_nodes else []
        return ", ".join([f"{n} node{'s' if n > 1 else ''} x {per}{''.join(whole)}", *where])
    gpus = job_gpus(cfg, stage, launch) if stage != REPORT else 0
    n = launch.cpus_per_task
    cpus = f"{n} CPU{'s' if n > 1 else ''}" if n else "Slurm's default CPUs"
    return ", ".join(["1 process", cpus, f"{gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "no GPU", *where])


def describe(cfg: CoreConfig, chain: Chain, submitted: bool) -> str:
    """The decisions (as `python -m factory.pipeline --dry-run` prints them), then the job graph: per job why it
    runs, the stages it waits for, its resources and its job id."""
    lines = [describe_decisions(chain.decisions)]
    if not chain.jobs:
        return "\n".join(lines + [f"chain of {cfg.run.dir}: nothing to run"])
    width = max(len(j.stage) for j in chain.jobs)
    lines.append(f"chain of {cfg.run.dir}: {len(chain.jobs)} jobs, each after the jobs of the stages it reads from")
    for j in chain.jobs:
        job = (f"job {j.job_id}" if j.job_id else j.name) + (f" (kept: already {j.kept.state})" if j.kept else "")
        lines.append(f"  {j.stage:<{width}}  {job}: {j.reason}")
        lines.append(f"  {'':<{width}}  after: {', '.join(j.after) or '-'}; {j.resources}")
        lines += [f"  {'':<{width}}  moved aside: {j.moved_aside}"] if j.moved_aside else []
    lines += [f"  cancelled job {j.id} ({j.name}): it waited for a job that failed" if submitted else
              f"  job {j.id} ({j.name}) waits for a job that failed: --submit cancels it" for j in chain.dead]
    return "\n".join(lines)


def submit_chain(cfg: CoreConfig, chain: Chain) -> None:
    """Write each script and submit the jobs held, record them in chain.json, then release them, so that no job
    starts before the record that names it. A resumable stage that `--fresh` lets start over has its earlier
    output moved aside first."""
    slurm_queue.cancel([job.id for job in chain.dead])
    jobs, folder = chain.jobs, cfg.run.dir / "launch" / "chain"
    held: list[str] = []
    try:
        for job in jobs:
            ids = [j.job_id for j in jobs if j.stage in job.after]
            if job.kept:
                job.job_id = job.kept.id
                if job.stage == REPORT:
                    slurm_queue.depend(job.job_id, ids)
                continue
            if job.start_over:
                job.moved_aside = str(move_aside(output_folder(cfg, job.stage), cfg.run.dir))
            path = folder / f"{job.stage}.sbatch"
            atomic_write_text(path, job.script)
            job.log_dir.mkdir(parents=True, exist_ok=True)
            job.job_id = slurm_queue.submit(str(path), ids, hold=True)
            held.append(job.job_id)
    except OSError as e:
        raise OutputError(f"chain: {os_error_line(e, folder)}") from None
    finally:
        chain_record.update(cfg.run.dir, lambda record: _record(record, jobs))
        slurm_queue.release(held)


def _record(record: dict[str, Any], jobs: list[ChainJob]) -> None:
    record.pop("ended_at", None)
    for job in jobs:
        if job.job_id and record["jobs"].get(job.stage, {}).get("job_id") != job.job_id:
            record["jobs"][job.stage] = job.entry()


def launch_pipeline(args: argparse.Namespace, cfg: CoreConfig) -> int:
    """Submit the stages the pipeline would run as Slurm jobs chained by their dependencies (--submit)."""
    fresh = {name for value in args.fresh for name in value.split(",") if name}
    if args.dry_run or not args.submit:
        chain = plan_chain(cfg, args.config, args.overrides, args.start, args.only, fresh, dry_run=True)
        print(describe(cfg, chain, submitted=False))
        if plans := training_plans(cfg, chain.decisions):
            print(plans)
        if chain.unchecked:
            print(f"({chain.unchecked})")
        print("nothing submitted" + ("" if args.dry_run else "; submit with --submit"))
        return 0
    try:
        cfg.run.dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"run.dir: {os_error_line(e, cfg.run.dir)}") from None
    with FolderLock(cfg.run.dir / LOCK_NAME, f"pipeline of {cfg.run.dir}"):
        chain = plan_chain(cfg, args.config, args.overrides, args.start, args.only, fresh)
        submit_chain(cfg, chain)
    print(describe(cfg, chain, submitted=True))
    if chain.jobs:
        print(f"follow it with: python -m factory.launch status --config {shlex.join([args.config, *args.overrides])}")
    return 0
