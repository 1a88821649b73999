"""Bad config values and files, and I/O faults, through the stage CLI, the pipeline and the launcher."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from factory import pipeline, stage
from factory.launch.__main__ import main as launch_main
from factory.run_state import RECORDS_LOCK
from tests.badinput.conftest import DEMO, assert_one_clear_line, run_main, snapshot


CONFIG_CASES = [
    ("pretrain", "model.hidden_size=-1", "model.hidden_size"),
    ("pretrain", "model.seq_length=abc", "model.seq_length"),
    ("pretrain", "model.num_attention_heads=6", "num_attention_heads"),
    ("pretrain", "model.num_query_groups=3", "model.num_query_groups"),
    ("pretrain", "model.ffn_hidden_size=0", "model.ffn_hidden_size"),
    ("pretrain", "model.rotary_base=0", "model.rotary_base"),
    ("pretrain", "model.num_layers=0", "model.num_layers"),
    ("pretrain", "model.nosuch=1", "model.nosuch"),
    ("pretrain", "nosuch.key=1", "nosuch"),
    ("pretrain", "runtime.device=tpu", "runtime.device"),
    ("pretrain", "runtime.precision=fp8", "runtime.precision"),
    ("pretrain", "runtime.seed=x", "runtime.seed"),
    ("pretrain", "parallel.tensor=0", "parallel.tensor"),
    ("pretrain", "parallel.pipeline=3", "parallel.pipeline"),
    ("pretrain", "parallel.context=2", "parallel.context"),
    ("pretrain", "pretrain.train_iters=0", "pretrain.train_iters"),
    ("pretrain", "pretrain.micro_batch_size=3", "micro_batch_size"),
    ("pretrain", "pretrain.global_batch_size=0", "pretrain.global_batch_size"),
    ("pretrain", "pretrain.optimizer.lr=-1", "pretrain.optimizer.lr"),
    ("pretrain", "pretrain.schedule.style=nope", "pretrain.schedule.style"),
    ("pretrain", "pretrain.checkpoint.save_interval=-1", "pretrain.checkpoint.save_interval"),
    ("pretrain", "model.hidden_size", "model.hidden_size"),
    ("tokenizer", "tokenizer.model_type=wordpiece", "tokenizer.model_type"),
    ("tokenizer", "tokenizer.vocab_size=-5", "tokenizer.vocab_size"),
    ("data", "data.text_unit=para", "data.text_unit"),
    ("data", "data.inputs=[]", "data.inputs"),
    ("pack", "pack.num_workers=0", "pack.num_workers"),
    ("upcycle", "upcycle.num_experts=1", "upcycle.num_experts"),
    ("cpt", "cpt.train_iters=0", "cpt.train_iters"),
    ("sft", "run.dir=/nonexistent/run", "/nonexistent/run/export/hf"),
    ("dpo", "run.dir=/nonexistent/run", "/nonexistent/run"),
    ("eval", "run.dir=/nonexistent/run", "/nonexistent/run/dpo/hf"),
]


@pytest.mark.parametrize(("verb", "override", "names"), CONFIG_CASES, ids=[f"{v}:{o}" for v, o, _ in CONFIG_CASES])
def test_config_case(prepared, capsys, verb, override, names):
    before = snapshot(prepared)
    code, err = run_main(capsys, stage.main, [verb, "--config", DEMO, f"run.dir={prepared / 'run'}", override])
    assert_one_clear_line(code, err, names)
    assert snapshot(prepared) == before


def test_config_file_cases(prepared, capsys, tmp_path):
    """A missing config, a file that is not YAML, a YAML list, an empty file: each names the file."""
    not_yaml, listed, empty = tmp_path / "bad.yaml", tmp_path / "list.yaml", tmp_path / "empty.yaml"
    not_yaml.write_text("run: {name: x\nmodel: [\n")
    listed.write_text("- run\n- model\n")
    empty.write_text("")
    for path in (tmp_path / "missing.yaml", not_yaml, listed, empty):
        code, err = run_main(capsys, stage.main, ["data", "--config", str(path)])
        assert_one_clear_line(code, err, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "empty.yaml", "list.yaml"]


PIPELINE_CASES = [
    (["--only", "nosuch"], "nosuch"),
    (["--from", "nosuch"], "nosuch"),
    (["--fresh", "pretrain"], "pretrain"),
    (["runtime.seed=x"], "runtime.seed"),
    (["data.nosuch=1"], "data.nosuch"),
]


@pytest.mark.parametrize(("args", "names"), PIPELINE_CASES, ids=[" ".join(a) for a, _ in PIPELINE_CASES])
def test_pipeline_case(prepared, capsys, args, names):
    before = snapshot(prepared)
    code, err = run_main(capsys, pipeline.main, ["--config", str(prepared / "data.yaml"), "--no-report", *args])
    assert_one_clear_line(code, err, names)
    assert snapshot(prepared) == before


LAUNCH_CASES = [
    (["local", "pretrain", "model.hidden_size=-1"], "model.hidden_size"),
    (["local", "data", "data.nosuch=1"], "data.nosuch"),
    (["slurm", "pretrain", "parallel.tensor=0"], "parallel.tensor"),
    (["slurm", "pretrain", "launch.nosuch=1"], "launch.nosuch"),
]


@pytest.mark.parametrize(("args", "names"), LAUNCH_CASES, ids=[" ".join(a) for a, _ in LAUNCH_CASES])
def test_launch_case(prepared, capsys, args, names):
    before = snapshot(prepared)
    launcher, verb, override = args
    code, err = run_main(capsys, launch_main,
                         [launcher, verb, "--config", DEMO, f"run.dir={prepared / 'run'}", override])
    assert_one_clear_line(code, err, names)
    assert snapshot(prepared) == before


# ---- I/O faults: the output location is unusable, or fills up while the stage writes.

def data_stage(prepared: Path, *overrides: str) -> list[str]:
    return ["data", "--config", str(prepared / "data.yaml"), *overrides]


def test_output_dir_is_a_file(prepared, capsys, tmp_path):
    target = tmp_path / "kept-here"
    target.write_text("a user's file\n")
    code, err = run_main(capsys, stage.main, data_stage(prepared, f"data.output_dir={target}"))
    assert_one_clear_line(code, err, f"data: {target}: is a file")
    assert target.read_text() == "a user's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept-here"]


def test_output_dir_below_a_file(prepared, capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, err = run_main(capsys, stage.main, data_stage(prepared, f"data.output_dir={blocker}/out"))
    assert_one_clear_line(code, err, f"{blocker}: is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def _cli(argv: list[str], **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "factory.stage", *argv], capture_output=True, text=True,
                          env=env, **popen)


def test_disk_full_while_writing(prepared, tmp_path):
    """`ulimit -f`: the first write past the limit fails; the stage names the file and removes its temp."""
    out = tmp_path / "out"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = _cli(data_stage(prepared, f"data.output_dir={out}"), preexec_fn=limit_file_size)
    assert_one_clear_line(proc.returncode, proc.stderr, str(tmp_path))
    assert "File too large" in proc.stderr
    # only the data steps' resume state (`.<output>.work`, docs/stages/data.md) remains: no output, no temp
    assert [p.name for p in tmp_path.iterdir()] in ([], [".out.work"])
    assert not out.exists()


def _drop_to_nobody() -> None:
    os.setgid(65534)
    os.setuid(65534)


def as_nobody():
    """The preexec function that runs a child as `nobody`; skips when `nobody` cannot run this interpreter
    (e.g. a Python installed under a private home folder)."""
    try:
        ok = subprocess.run([sys.executable, "-c", "0"], preexec_fn=_drop_to_nobody).returncode == 0
    except PermissionError:
        ok = False
    if not ok:
        pytest.skip(f"user nobody cannot run {sys.executable}")
    return _drop_to_nobody


def test_unreadable_config(prepared, tmp_path):
    config = tmp_path / "secret.yaml"
    config.write_text((prepared / "data.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    os.chmod(config, 0)
    if os.getuid() == 0:
        proc = _cli(["data", "--config", str(config)], preexec_fn=as_nobody())
    else:
        proc = _cli(["data", "--config", str(config)])
    assert_one_clear_line(proc.returncode, proc.stderr, f"{tmp_path}")


@pytest.fixture
def open_folder():
    """A folder every user may enter and read (pytest's own are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


def test_output_dir_not_writable(prepared, open_folder):
    """A folder the user may not write (root runs the stage as `nobody`, whom the permission bits bind)."""
    (open_folder / "ja.txt").write_text((prepared / "ja.txt").read_text(encoding="utf-8"), encoding="utf-8")
    config = yaml.safe_load((prepared / "data.yaml").read_text(encoding="utf-8"))
    config["data"]["inputs"] = [{"path": str(open_folder / "ja.txt")}]
    (open_folder / "data.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    locked = open_folder / "locked"
    locked.mkdir()
    if os.getuid() == 0:
        os.chmod(locked, 0o755)  # owned by root: nobody may not write it
        popen = {"preexec_fn": as_nobody()}
    else:
        os.chmod(locked, 0o555)
        popen = {}
    try:
        proc = _cli(data_stage(open_folder, f"data.output_dir={locked}/out", f"run.dir={locked}/run"), **popen)
    finally:
        os.chmod(locked, 0o755)
    assert_one_clear_line(proc.returncode, proc.stderr, f"{locked}: not writable")
    assert list(locked.iterdir()) == []


def test_stale_temp_of_a_killed_run_is_removed(prepared, capsys, tmp_path):
    """A temp folder left by a dead process on this host is removed by the next run; a live one is kept."""
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".out.{host}-{dead.pid}-abc123.tmp"
    live = tmp_path / f".out.{host}-{os.getppid()}-def456.tmp"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "kept.jsonl").write_text("{}\n")
    code, _ = run_main(capsys, stage.main, data_stage(prepared, f"data.output_dir={out}"))
    assert code == 0
    assert not stale.exists() and live.is_dir()
    assert (out / "manifest.json").is_file()


def test_pipeline_stage_with_an_output_file_in_the_way(prepared, capsys, tmp_path):
    """Through the pipeline the same refusal is one line naming the stage and the path."""
    target = tmp_path / "kept-here"
    target.write_text("a user's file\n")
    code, err = run_main(capsys, pipeline.main, ["--config", str(prepared / "data.yaml"), "--no-report",
                                                 f"run.dir={tmp_path / 'run'}", f"data.output_dir={target}"])
    assert_one_clear_line(code, err, f"{target}: is a file")
    assert "data" in err and target.read_text() == "a user's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept-here", "run"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [RECORDS_LOCK, "pipeline.json"]
