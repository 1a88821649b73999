"""The sbatch renderer: golden files, committed templates, bash syntax, CPU partitions, sbatch options.

The rendered scripts run on a real Slurm in test_launch_slurm_jobs.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
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
    "pretrain-cpu": {
        "run": {"name": "g", "dir": "runs/g"}, "model": MODEL, "pretrain": {**TRAIN, "global_batch_size": 4},
        "launch": {"gpus_per_node": 0, "nproc_per_node": 2, "venv": ".venv", "partition": "cpu",
                   "constraint": "avx512", "reservation": "maint", "time": "00:30:00", "rdzv_port": 29400,
                   "signal_seconds_before_timeout": 60, "extra_sbatch": ["--mem=8G"]}},
    "data-array": {
        "run": {"name": "g", "dir": "runs/g"},
        "launch": {"venv": "/opt/venv", "cpus_per_task": 16, "output_dir": "/logs",
                   "array": {"max_parallel": 2, "tasks": [["data.inputs=[a.jsonl]", "data.output_dir=runs/g/a"],
                                                          ["data.inputs=[b c.jsonl]", "data.output_dir=runs/g/b"]]}}},
    "data-quoted": {  # what sbatch's own parser needs quoted: blanks, '#', quotes; '%' doubled in file names
        "run": {"name": "my run", "dir": 'runs/my run #1/"50%"'},
        "launch": {"venv": "/opt/my venv", "partition": "cpu,debug", "account": "lab#2", "job_name": "tok 'a'"}},
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


def _script(case: str, **launch) -> str:
    raw = {**CASES[case], "launch": {**CASES[case]["launch"], **launch}}
    return render(validate_config(raw), "pretrain", "c.yaml", []).script


def test_gpu_jobs_take_whole_nodes_and_cpu_jobs_request_no_gpu():
    gpu, cpu = _script("pretrain-container"), _script("pretrain-cpu")
    assert "#SBATCH --exclusive" in gpu and "#SBATCH --gpus-per-node=4" in gpu
    assert "--exclusive" not in cpu and "--gpus" not in cpu and "--nproc-per-node 2" in cpu
    assert "#SBATCH --exclusive" not in _script("pretrain-container", exclusive=False)
    assert "#SBATCH --exclusive" in _script("pretrain-cpu", exclusive=True)


def test_rendezvous_port_is_per_job_unless_set():
    assert "MASTER_PORT=$((10000 + SLURM_JOB_ID % 20000))" in _script("pretrain-container")
    assert "MASTER_PORT=29400\n" in _script("pretrain-cpu")
    port = subprocess.run(["bash", "-c", "SLURM_JOB_ID=123456; echo $((10000 + SLURM_JOB_ID % 20000))"],
                          capture_output=True, text=True).stdout
    assert port.strip() == "13456"


def test_torchrun_leaves_stop_signals_to_the_workers():
    script = _script("pretrain-container")
    assert "bash -c 'trap \"\" TERM USR1; exec \"$@\"' bash \\\n    torchrun" in script
    assert "--signals-to-handle SIGINT,SIGHUP,SIGQUIT " in script
    assert 'scancel --signal="$1" "$SLURM_JOB_ID"' in script and "kill -s" not in script


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(ConfigError, match=r"launch.nproc_per_node=8: more processes than GPUs per node \(4\)"):
        _script("pretrain-container", nproc_per_node=8)


def test_single_process_verbs_request_no_gpu_on_a_cpu_partition():
    rendered = render(validate_config(CASES["pretrain-cpu"]), "export", "c.yaml", [])
    assert "--gpus" not in rendered.script and "#SBATCH --partition=cpu" in rendered.script


SYNTH_SERVE = {
    "run": {"name": "g", "dir": "runs/g"},
    "synth": {"serve": {"model": "runs/g/export/hf", "args": ["--max-model-len", "4096"]}, "personas": ["p"],
              "seeds": {"path": "runs/g/data/kept.jsonl"}},
    "launch": {"gpus_per_node": 8, "venv": ".venv"}}


def test_synth_with_serve_starts_vllm_on_the_node_waits_for_it_and_points_the_client_at_it(tmp_path):
    rendered = render(validate_config(SYNTH_SERVE), "synth", "c.yaml", [])
    script = rendered.script
    _bash_n(script, tmp_path)
    assert "#SBATCH --gpus-per-node=8" in script
    serve = next(line for line in script.splitlines() if line.startswith("vllm serve"))
    assert serve == ("vllm serve runs/g/export/hf --served-model-name teacher --host 127.0.0.1 --port 8000 "
                     "--tensor-parallel-size 8 --max-model-len 4096 &")
    assert script.index("until curl -sf http://127.0.0.1:8000/v1/models") < script.index("srun --overlap")
    assert rendered.per_node == ["node 0: python -m factory.stage synth --config c.yaml "
                                 "synth.base_url=http://127.0.0.1:8000/v1 synth.model=teacher"]


def test_synth_with_serve_run_outside_its_job_names_what_is_missing(tmp_path):
    from factory.registry import STAGES

    raw = {**SYNTH_SERVE, "synth": {**SYNTH_SERVE["synth"], "seeds": {"path": str(tmp_path / "kept.jsonl")}}}
    (tmp_path / "kept.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match=r"synth.serve: the vLLM server of runs/g/export/hf is started by the "
                                          r"stage's Slurm job"):
        STAGES["synth"].plan(validate_config(raw))


@pytest.mark.parametrize(("key", "value", "words"), [
    ("partition", "gpu a100", "launch.partition='gpu a100': a Slurm name cannot contain spaces"),
    ("account", "lab\tb", "launch.account='lab\\tb': a Slurm name cannot contain spaces"),
    ("qos", " high", "launch.qos=' high'"),
    ("job_name", "a\nb", "launch.job_name='a\\nb': cannot contain a line break"),
], ids=["partition-space", "account-tab", "qos-space", "job-name-newline"])
def test_values_sbatch_cannot_take_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as info:
        validate_config({**CASES["data-array"], "launch": {key: value}})
    assert len(info.value.problems) == 1 and words in info.value.problems[0], info.value.problems


def test_a_run_folder_with_a_line_break_is_refused_before_rendering():
    cfg = validate_config({"run": {"name": "g", "dir": "runs/a\nb"}})
    with pytest.raises(ConfigError, match=r"run.dir='runs/a\\nb': cannot contain a line break .*#SBATCH"):
        render(cfg, "data", "configs/g.yaml", [])

