"""Runs the data stage's datatrove steps: locally (a process pool per step) or as dependent Slurm job arrays."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.executor.slurm import SlurmPipelineExecutor
from loguru import logger

from factory import sbatch
from factory.data.shards import raise_failure
from factory.data.steps import Step
from factory.errors import DataError

log = logging.getLogger(__name__)


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor with its console output cut to errors; each task's full log stays under
    `<work>/logs/<step>/logs/`."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        try:
            return super()._run_for_rank(rank, local_rank + 1, node_rank)  # local_rank > 0: errors only
        finally:
            logger.remove()  # datatrove adds a console handler back after each task


_POOL_RUNNING = False


def _leave_interrupts_to_the_main_process() -> None:
    """Ctrl-C reaches every process of the group: pool workers ignore it, the main process stops the pool (its
    workers get SIGTERM) and prints one line, so no worker prints a KeyboardInterrupt traceback."""
    if _POOL_RUNNING:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


os.register_at_fork(after_in_child=_leave_interrupts_to_the_main_process)


def run_local(steps: list[Step], work: Path, workers: int) -> None:
    """Run the steps one after another; tasks a killed run completed are skipped (datatrove's completions)."""
    global _POOL_RUNNING
    logger.remove()  # datatrove's console logging; the factory logs each step
    _POOL_RUNNING = True
    try:
        _run_steps(steps, work, workers)
    finally:
        _POOL_RUNNING = False


def _run_steps(steps: list[Step], work: Path, workers: int) -> None:
    for step in steps:
        executor = QuietLocalExecutor(step.pipeline, tasks=step.tasks, workers=min(workers, step.tasks),
                                      logging_dir=str(work / "logs" / step.name), start_method="fork")
        done = step.tasks - len(executor.get_incomplete_ranks())
        log.info("data: %s, %d tasks%s", step.name, step.tasks, f" ({done} already done)" if done else "")
        executor.run()
        raise_failure(work)  # an input a task could not read: stop before later steps use what it read
        if missing := executor.get_incomplete_ranks():
            raise DataError(f"data: step {step.name} left tasks {missing} unfinished (logs: "
                            f"{work / 'logs' / step.name / 'logs'})")


class FactorySlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor; `mem_per_cpu_gb: 0` leaves the memory request to the partition's default, and
    no stats-merging job follows each array (the stage counts from the shards; per-task stats stay in the logs)."""

    def launch_merge_stats(self) -> None:
        return None

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        """datatrove's directives with each value as one #SBATCH word (it writes `--key=value` unquoted)."""
        args = super().get_sbatch_args(max_array)
        if not self.mem_per_cpu_gb:
            args.pop("mem-per-cpu")
        words = {key: sbatch.word(str(value)) if value != "" else value for key, value in args.items()}
        log = sbatch.log_file(self.slurm_logs_folder, "%A_%a.out")
        return {**words, **{key: log for key in ("output", "error") if key in words}}


def submit_slurm(executors: list[SlurmPipelineExecutor]) -> list[str]:
    """Submit every step's job array (each after the one before); the job ids, none for steps already done."""
    logger.remove()
    try:
        executors[-1].launch_job()  # launches every dependency first
    except subprocess.CalledProcessError as e:
        raise DataError(f"data: sbatch refused a job array (exit {e.returncode}; its message is above)") from None
    return [str(e.job_id) for e in executors if e.job_id not in (None, -1)]


def slurm_executors(steps: list[Step], work: Path, *, partition: str, time: str, cpus_per_task: int,
                    mem_per_cpu_gb: int, env_command: str, sbatch_args: dict[str, str],
                    job_name: str) -> list[SlurmPipelineExecutor]:
    """One job array per step, each depending on the one before (afterok), in order."""
    executors: list[SlurmPipelineExecutor] = []
    for step in steps:
        executors.append(FactorySlurmExecutor(
            step.pipeline, tasks=step.tasks, time=time, partition=partition, cpus_per_task=cpus_per_task,
            mem_per_cpu_gb=mem_per_cpu_gb, job_name=f"{job_name}-{step.name}", env_command=env_command,
            sbatch_args=dict(sbatch_args), logging_dir=str(work / "logs" / step.name),
            slurm_logs_folder=str(work / "slurm_logs" / step.name), depends=executors[-1] if executors else None,
            qos="", mail_type="NONE", requeue_signals=None))
    return executors


def render_slurm(executors: list[SlurmPipelineExecutor]) -> dict[str, str]:
    """The sbatch script of each step (what `launch_job` would submit), keyed by job name."""
    scripts = {}
    for executor in executors:
        pickled = executor.logging_dir.resolve_paths("executor.pik")
        scripts[executor.job_name] = executor.get_launch_file_contents(
            executor.get_sbatch_args(min(executor.tasks, executor.max_array_size)),
            f"srun -l -n 1 launch_pickled_pipeline {pickled}")
    return scripts
