"""The sbatch renderer: golden files, committed templates, bash syntax, and the signal/requeue flow."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from factory.config import validate_config
from factory.errors import ConfigError
from factory.launch.slurm import render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FACTORY_UPDATE_GOLDEN") == "1"
"""FACTORY_UPDATE_GOLDEN=1 rewrites the golden files instead of comparing."""
TRAIN = {"train_iters": 10, "global_batch_size": 16, "micro_batch_size": 1, "optimizer": {"lr": 1e-3}}
MODEL = {"num_layers": 4, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
         "num_query_groups": 2, "seq_length": 32, "vocab_size": 256}
CASES = {
    "pretrain-container": {
        "run": {"name": "g", "dir": "runs/g"}, "parallel": {"tensor": 2, "pipeline": 2}, "model": MODEL,
        "pretrain": TRAIN,
        "launch": {"nodes": 2, "gpus_per_node": 4, "partition": "h100", "account": "llm", "qos": "high",
                   "time": "0-04:00:00", "container_image": "nvcr.io#nvidia/pytorch:25.01-py3",
                   "container_mounts": ["/lustre:/lustre"], "env": {"NCCL_SOCKET_IFNAME": "ib0"},
                   "requeue": False, "signal_seconds_before_timeout": 120, "max_restarts": 0}},
    "data-array": {
        "run": {"name": "g", "dir": "runs/g"},
        "launch": {"venv": "/opt/venv", "cpus_per_task": 16, "output_dir": "/logs",
                   "array": {"max_parallel": 2, "tasks": [["data.inputs=[a.jsonl]", "data.output_dir=runs/g/a"],
                                                          ["data.inputs=[b c.jsonl]", "data.output_dir=runs/g/b"]]}}},
}


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; FACTORY_UPDATE_GOLDEN=1 rewrites it"


def _bash_n(text: str, tmp_path: Path) -> None:
    script = tmp_path / "check.sbatch"
    script.write_text(text)
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, tmp_path):
    stage = "data" if case == "data-array" else "pretrain"
    rendered = render(validate_config(CASES[case]), stage, "configs/g.yaml", ["x.y=1", "launch.nodes=2"])
    _check_golden(f"{case}.sbatch", rendered.script)
    _check_golden(f"{case}.nodes.txt", "\n".join(rendered.per_node) + "\n")
    _bash_n(rendered.script, tmp_path)


def test_per_node_lines_name_every_node_and_the_rank_layout():
    per_node = render(validate_config(CASES["pretrain-container"]), "pretrain", "c.yaml", []).per_node
    assert [line.split(":")[0] for line in per_node[:2]] == ["node 0 (SLURM_NODEID=0, rendezvous host)",
                                                            "node 1 (SLURM_NODEID=1)"]
    assert all("torchrun --nnodes 2 --nproc-per-node 4" in line for line in per_node[:2])
    assert "global ranks k*4..k*4+3 of 8" in per_node[2]


def test_committed_templates_equal_a_fresh_render(tmp_path):
    spec = importlib.util.spec_from_file_location("render_templates", ROOT / "scripts/render_slurm_templates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scripts = module.render_all()
    assert sorted(scripts) == sorted(p.name for p in (ROOT / "scripts/slurm").glob("*.sbatch"))
    for name, text in scripts.items():
        assert (ROOT / "scripts/slurm" / name).read_text() == text, f"{name} is stale"
        _bash_n(text, tmp_path)
    assert "#SBATCH --nodes=32" in scripts["tanuki-8x8b-32nodes.sbatch"]
    assert "TP1/PP4/CP1/EP8/ETP1, data parallel 64" in scripts["tanuki-8x8b-32nodes.sbatch"]


def test_world_size_problems_are_all_reported():
    raw = {**CASES["pretrain-container"], "launch": {"nodes": 1, "gpus_per_node": 6}}
    with pytest.raises(ConfigError) as e:
        render(validate_config(raw), "pretrain", "c.yaml", [])
    assert e.value.problems == [
        "launch.nodes x launch.gpus_per_node = 1 x 6: parallel=TP2/PP2/CP1/EP1/ETP2: world size 6 must be "
        "divisible by tensor x pipeline x context (4)",
        "launch.nodes x launch.gpus_per_node = 1 x 6: parallel.expert=1: world size 6 must be divisible by "
        "expert x expert_tensor x pipeline (4)"]


def test_global_batch_must_divide_over_data_parallel_ranks():
    raw = {**CASES["pretrain-container"], "launch": {"nodes": 3, "gpus_per_node": 4}}
    with pytest.raises(ConfigError, match=r"pretrain.global_batch_size=16: .* \(1 x 3\) at world size 12"):
        render(validate_config(raw), "pretrain", "c.yaml", [])


def test_array_only_for_data_verbs():
    with pytest.raises(ConfigError, match="stage 'upcycle' cannot run as a job array"):
        render(validate_config(CASES["data-array"]), "upcycle", "c.yaml", [])


def _fake_cluster(tmp_path: Path) -> dict[str, str]:
    """srun that execs its command, torchrun that 'saves' on a signal, scontrol that logs requeues."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": 'while [[ $1 == --* ]]; do shift; done; exec "$@"',
        "torchrun": 'echo "$@" > "$LOG/args"; trap \'echo USR1 > "$LOG/saved"; exit 0\' USR1\n'
                    'trap \'echo TERM > "$LOG/saved"; exit 0\' TERM; touch "$LOG/started"\n'
                    'while :; do sleep 0.05; done',
        "scontrol": 'case $1 in show) echo node-a; echo node-b ;; requeue) echo "$2" > "$LOG/requeued" ;; esac',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path),
            "SLURM_JOB_ID": "77", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node-[a-b]"}


@pytest.mark.parametrize("sig,requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_signal_reaches_the_training_then_the_job_requeues(tmp_path, sig, requeued):
    raw = {**CASES["pretrain-container"], "launch": {"nodes": 2, "gpus_per_node": 4}}
    script = tmp_path / "job.sbatch"
    script.write_text(render(validate_config(raw), "pretrain", "c.yaml", []).script)
    job = subprocess.Popen(["bash", str(script)], env=_fake_cluster(tmp_path), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(sig)
    out, _ = job.communicate(timeout=20)
    assert job.returncode == 0, out
    assert (tmp_path / "saved").read_text().strip() == sig.name[3:]
    assert (tmp_path / "requeued").exists() == requeued
    if requeued:
        assert (tmp_path / "requeued").read_text().strip() == "77"
    assert "--rdzv-endpoint node-a:29500 --rdzv-id 77" in (tmp_path / "args").read_text()
