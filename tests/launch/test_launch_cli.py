"""`python -m factory.launch`: local dry-run commands, validation exits, writing and submitting scripts."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import yaml

from factory.launch.__main__ import main

RAW = {"run": {"name": "c", "dir": None}, "parallel": {"pipeline": 2},
       "model": {"num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
                 "num_query_groups": 2, "seq_length": 32, "vocab_size": 256},
       "pretrain": {"train_iters": 4, "global_batch_size": 4, "micro_batch_size": 1, "optimizer": {"lr": 1e-3}},
       "launch": {"nodes": 1, "gpus_per_node": 4}}


def _config(tmp_path: Path) -> Path:
    raw = {**RAW, "run": {"name": "c", "dir": str(tmp_path / "run")}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_local_dry_run_prints_the_torchrun_command(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["local", "pretrain", "--config", str(config), "--nproc", "2", "pretrain.train_iters=3",
                 "launch.max_restarts=1", "--dry-run"]) == 0
    assert shlex.split(capsys.readouterr().out) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--max-restarts", "1", "--signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--shutdown-timeout", "300", "-m", "factory.stage", "pretrain", "--config", str(config),
        "pretrain.train_iters=3"]


def test_local_nproc_defaults_to_gpus_per_node_and_data_verbs_run_one_process(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["local", "pretrain", "--config", str(config), "--dry-run"]) == 0
    assert "--nproc-per-node 4" in capsys.readouterr().out
    assert main(["local", "data", "--config", str(config), "--nproc", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == [sys.executable, "-m", "factory.stage", "data", "--config", str(config)]
    assert main(["local", "data", "--config", str(config), "--nproc", "2", "--dry-run"]) == 2
    assert "error: --nproc 2: stage 'data' runs one process" in capsys.readouterr().err


def test_incompatible_world_exits_2_with_one_line_per_problem(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["local", "pretrain", "--config", str(config), "--nproc", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: --nproc 3: parallel") for line in err)
    assert main(["slurm", "pretrain", "--config", str(config), "launch.gpus_per_node=3"]) == 2
    assert "launch.nodes x launch.gpus_per_node = 1 x 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_slurm_writes_the_script_and_its_log_folder(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["slurm", "pretrain", "--config", str(config)]) == 0
    script = tmp_path / "run" / "launch" / "pretrain.sbatch"
    assert f"wrote {script}" in capsys.readouterr().out
    assert "#SBATCH --gpus-per-node=4" in script.read_text()
    assert (tmp_path / "run" / "logs").is_dir()


def test_slurm_dry_run_writes_nothing_and_shows_each_node(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["slurm", "pretrain", "--config", str(config), "launch.nodes=2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash") and "#   node 1 (SLURM_NODEID=1): torchrun --nnodes 2" in out
    assert not (tmp_path / "run").exists()


def test_submit_without_sbatch_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["slurm", "pretrain", "--config", str(_config(tmp_path)), "--submit"]) == 1
    assert "error: sbatch not found on PATH; copy" in capsys.readouterr().err


def test_submit_runs_sbatch(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 42 ($1)"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert main(["slurm", "pretrain", "--config", str(_config(tmp_path)), "--submit"]) == 0
    assert f"Submitted batch job 42 ({tmp_path / 'run' / 'launch' / 'pretrain.sbatch'})" in capsys.readouterr().out


def test_array_tasks_are_validated_with_their_overrides(tmp_path, capsys):
    config = _config(tmp_path)
    tasks = 'launch.array.tasks=[["data.inputs=[a.jsonl]"], ["data.bogus=1"]]'
    assert main(["slurm", "data", "--config", str(config), tasks, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "launch.array.tasks[1]:" in err and "data.bogus: unknown key" in err
    assert "tasks[0]" not in err


def test_sft_runs_under_torchrun_with_every_rank_data_parallel(tmp_path, capsys):
    raw = {**RAW, "run": {"name": "c", "dir": str(tmp_path / "run")},
           "sft": {"datasets": [{"path": "x.jsonl"}], "learning_rate": 1e-5, "global_batch_size": 8,
                   "micro_batch_size": 1, "deepspeed": "configs/deepspeed/zero3.json"}}
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["local", "sft", "--config", str(config), "--nproc", "4", "--dry-run"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]
    assert words[-4:] == ["factory.stage", "sft", "--config", str(config)]
    # parallel.pipeline=2 is Megatron's layout; it does not constrain sft, only the batch does
    assert main(["local", "sft", "--config", str(config), "--nproc", "3", "--dry-run"]) == 2
    assert "sft.global_batch_size=8: must be divisible by micro_batch_size x world size (1 x 3)" in \
        capsys.readouterr().err


def test_sft_trainer_arguments_carry_the_deepspeed_config(tmp_path):
    from factory.config import validate_config
    from factory.posttrain.model import trainer_kwargs

    cfg = validate_config({**RAW, "run": {"name": "c", "dir": str(tmp_path)},
                           "sft": {"datasets": [{"path": "x.jsonl"}], "learning_rate": 1e-5,
                                   "deepspeed": "configs/deepspeed/zero3.json"}})
    kwargs = trainer_kwargs(cfg, cfg.sft, tmp_path, "sft")
    assert kwargs["deepspeed"] == "configs/deepspeed/zero3.json"
    assert json.loads(Path(kwargs["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3


def test_sbatch_options_from_the_command_line_are_written_into_the_script(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["slurm", "pretrain", "--config", str(config), "-p", "cpu", "--account", "12345", "-q", "low",
                 "-C", "avx512", "--reservation", "maint", "--sbatch=--mem=0", "--sbatch=--exclude=n1",
                 "launch.gpus_per_node=0", "launch.nproc_per_node=2", "launch.extra_sbatch=[--hint=nomultithread]",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    for line in ("--partition=cpu", "--account=12345", "--qos=low", "--constraint=avx512", "--reservation=maint",
                 "--hint=nomultithread", "--mem=0", "--exclude=n1"):
        assert f"#SBATCH {line}\n" in out
    assert "--gpus-per-node" not in out and 'launch.partition="cpu"' in out.splitlines()[1]


def test_local_nproc_is_one_on_a_cpu_partition(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["local", "pretrain", "--config", str(config), "launch.gpus_per_node=0", "parallel.pipeline=1",
                 "--dry-run"]) == 0
    assert "--nproc-per-node 1 " in capsys.readouterr().out
