"""Runs the data stage's datatrove steps: locally (a process pool per step) or as dependent Slurm job arrays."""

from __future__ import annotations

import logging
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.executor.slurm import SlurmPipelineExecutor
from loguru import logger

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


def run_local(steps: list[Step], work: Path, workers: int) -> None:
    """Run the steps one after another; tasks a killed run completed are skipped (datatrove's completions)."""
    logger.remove()  # datatrove's console logging; the factory logs each step
    for step in steps:
        executor = QuietLocalExecutor(step.pipeline, tasks=step.tasks, workers=min(workers, step.tasks),
                                      logging_dir=str(work / "logs" / step.name), start_method="fork")
        done = step.tasks - len(executor.get_incomplete_ranks())
        log.info("data: %s, %d tasks%s", step.name, step.tasks, f" ({done} already done)" if done else "")
        executor.run()
        if missing := executor.get_incomplete_ranks():
            raise DataError(f"data: step {step.name} left tasks {missing} unfinished (logs: "
                            f"{work / 'logs' / step.name / 'logs'})")


def slurm_executors(steps: list[Step], work: Path, *, partition: str, time: str, cpus_per_task: int,
                    mem_per_cpu_gb: int, env_command: str, sbatch_args: dict[str, str],
                    job_name: str) -> list[SlurmPipelineExecutor]:
    """One job array per step, each depending on the one before (afterok), in order."""
    executors: list[SlurmPipelineExecutor] = []
    for step in steps:
        executors.append(SlurmPipelineExecutor(
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
