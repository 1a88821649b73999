"""The data stage's executors: the Slurm job arrays rendered in order, and a real submission end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import validate_config
from factory.data.executors import render_slurm, slurm_executors
from factory.data.steps import data_steps
from tests.data.test_data_stage import _jsonl, _write_inputs

STEPS = ["filter", "exact_find", "exact_filter", "minhash_buckets", "minhash_cluster", "minhash_filter"]


def test_slurm_render_has_one_array_per_step_chained_in_order(tmp_path):
    ja, en = _write_inputs(tmp_path)
    cfg = validate_config({"run": {"name": "t", "dir": str(tmp_path / "run")},
                           "data": {"inputs": [str(ja), str(en)], "output_dir": str(tmp_path / "out")}})
    executors = slurm_executors(data_steps(cfg.data, tmp_path / "work"), tmp_path / "work", partition="cpu",
                                time="02:00:00", cpus_per_task=4, mem_per_cpu_gb=3, env_command="source venv/bin/activate",
                                sbatch_args={"account": "llm"}, job_name="data")
    assert [e.depends.job_name if e.depends else None for e in executors] == [None] + [f"data-{s}" for s in STEPS[:-1]]
    scripts = render_slurm(executors)
    assert list(scripts) == [f"data-{s}" for s in STEPS]
    arrays = {name: next(line for line in text.splitlines() if line.startswith("#SBATCH --array="))
              for name, text in scripts.items()}
    assert arrays == {"data-filter": "#SBATCH --array=0-1", "data-exact_find": "#SBATCH --array=0-0",
                      "data-exact_filter": "#SBATCH --array=0-1", "data-minhash_buckets": "#SBATCH --array=0-8",
                      "data-minhash_cluster": "#SBATCH --array=0-0", "data-minhash_filter": "#SBATCH --array=0-1"}
    for name, text in scripts.items():
        step = name.removeprefix("data-")
        assert "#SBATCH --partition=cpu" in text and "#SBATCH --cpus-per-task=4" in text
        assert "#SBATCH --mem-per-cpu=3G" in text and "#SBATCH --account=llm" in text
        assert "source venv/bin/activate" in text
        assert f"launch_pickled_pipeline {tmp_path / 'work' / 'logs' / step / 'executor.pik'}" in text


@pytest.mark.slow
def test_a_real_slurm_submission_runs_the_steps_in_order_and_publishes(slurm, tmp_path):
    ja, en = _write_inputs(tmp_path)
    out = tmp_path / "out"
    venv_bin = Path(sys.executable).parent
    cmd = [sys.executable, "-m", "factory.stage", "data", "--config", "configs/demo-cpu.yaml",
           f"data.inputs=[{{path: {ja}, text_field: content}}, {{path: {en}, japanese: false}}]",
           f"data.output_dir={out}", "data.text_unit=paragraph", "data.max_error_rate=0.2", "data.executor=slurm",
           "data.slurm.partition=debug", "data.slurm.poll_seconds=1", "data.slurm.mem_per_cpu_gb=0",
           f"data.slurm.env_command=export PATH={venv_bin}:$PATH"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=slurm.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert (metrics["in"], metrics["kept"], metrics["rejected.exact_dup"], metrics["rejected.near_dup"]) == (12, 6, 1, 1)
    assert len(_jsonl(out / "kept.jsonl")) == 6 and not (tmp_path / ".out.work").exists()
