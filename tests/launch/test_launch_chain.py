"""`factory.launch slurm pipeline` without a cluster: the dry run shows the pipeline's own decisions, the job graph
with per-stage resources and GPU-hours; the scripts run the pipeline's `--job` mode and cancel what waits for a
failed stage; a chain is refused while the in-process pipeline holds the run, and for a launch array."""

from __future__ import annotations

from pathlib import Path

from factory.config import load_config
from factory.launch.__main__ import main
from factory.launch.chain import plan_chain
from factory.lock import FolderLock
from factory.pipeline import LOCK_NAME
from factory.pipeline import main as pipeline_main

ROOT = Path(__file__).resolve().parents[2]
TANUKI = str(ROOT / "configs" / "tanuki-8b.yaml")
STAGES = "launch.stages={pretrain: {nodes: 4, time: '7-00:00:00'}, pack: {partition: cpu, cpus_per_task: 16}}"


def test_dry_run_prints_the_pipeline_decisions_the_job_graph_and_gpu_hours(tmp_path, capsys):
    run = f"run.dir={tmp_path / 'run'}"
    assert pipeline_main(["--config", TANUKI, run, "--dry-run"]) == 0
    decisions = capsys.readouterr().out.split("# pretrain")[0].strip()
    assert main(["slurm", "pipeline", "--config", TANUKI, run, STAGES, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(decisions + "\nchain of ")
    graph = out.split("# pretrain")[0]
    assert "tokenizer  tanuki-8b.tokenizer." in graph and "after: -; 1 process, 32 CPUs, no GPU" in graph
    assert "pack       tanuki-8b.pack." in graph and "after: tokenizer; 1 process, 16 CPUs, no GPU, partition cpu" in graph
    assert "after: tokenizer, pack; 4 nodes x 8 GPUs (8 processes), whole nodes, time 7-00:00:00" in graph
    assert "after: tokenizer, pack, pretrain; 1 process" in graph
    assert "H100 GPU-hours at 40% MFU" in out and "days on 32 GPUs" in out
    assert not (tmp_path / "run").exists()


def test_each_job_runs_its_stage_through_the_pipeline_and_cancels_its_dependents_when_it_fails(tmp_path):
    cfg = load_config(TANUKI, [f"run.dir={tmp_path / 'run'}"])
    jobs = {job.stage: job for job in plan_chain(cfg, TANUKI, [f"run.dir={tmp_path / 'run'}"], dry_run=True).jobs}
    assert list(jobs) == ["tokenizer", "pack", "pretrain", "report"] and jobs["pretrain"].after == ["tokenizer", "pack"]
    pretrain = jobs["pretrain"].script
    assert f"-m factory.pipeline --config {TANUKI} run.dir={tmp_path / 'run'} --job pretrain" in pretrain
    assert f"if [ \"$stop\" != USR1 ] && ! python -m factory.launch status --config {TANUKI}" in pretrain
    assert "--job-ended pretrain; then" in pretrain and "#SBATCH --job-name=tanuki-8b.pretrain." in pretrain
    assert pretrain.index("scontrol requeue") < pretrain.index("--job-ended")
    report = jobs["report"].script
    assert "--job-name=tanuki-8b.report." in report and "--gpus-per-node" not in report
    assert f"python -m factory.launch status --config {TANUKI} run.dir={tmp_path / 'run'}\n" in report


def test_a_chain_is_refused_while_the_in_process_pipeline_holds_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with FolderLock(run / LOCK_NAME, f"pipeline of {run}"):
        assert main(["slurm", "pipeline", "--config", TANUKI, f"run.dir={run}", "--submit"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: pipeline of {run}: in use by pid ") and "wait for it to finish" in line
    assert sorted(p.name for p in run.iterdir()) == []


def test_a_launch_array_cannot_be_a_chain(tmp_path, capsys):
    array = 'launch.array.tasks=[["data.inputs=[a.jsonl]"]]'
    assert main(["slurm", "pipeline", "--config", TANUKI, f"run.dir={tmp_path / 'run'}", array, "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: launch.array: a chain runs each stage as one job recorded in pipeline.json")


def test_status_without_a_chain_is_one_line(tmp_path, capsys):
    assert main(["status", "--config", TANUKI, f"run.dir={tmp_path / 'run'}"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: {tmp_path / 'run' / 'chain.json'}: no chain was submitted for this run " \
                   "(python -m factory.launch slurm pipeline --config FILE --submit)"
