"""Operator slips that used to delete data: an empty or too-wide run.dir, an output folder that is someone else's,
an output over an input, a second writer. Each is one line before anything is written, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from factory import pipeline, stage
from factory.io import OWNER_FILE
from tests.badinput.conftest import DEMO, assert_one_clear_line, run_main, snapshot
from tests.test_lock import hold_in_child

ROOT = Path(__file__).resolve().parents[2]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("verb", ["tokenizer", "data"])
@pytest.mark.parametrize("run_dir", ["", ".", "..", "/"], ids=["empty", "here", "parent", "root"])
def test_a_run_dir_that_holds_the_checkout_is_refused(capsys, monkeypatch, verb, run_dir):
    """`run.dir=$RUN_DIR` with the variable unset, from the root of a clone: nothing there changes."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    monkeypatch.chdir(ROOT)
    before = _git_status()
    code, err = run_main(capsys, stage.main, [verb, "--config", DEMO, f"run.dir={run_dir}"])
    assert_one_clear_line(code, err, "run.dir=")
    assert code == 2 and _git_status() == before


def _tokenizer(prepared: Path, *overrides: str) -> list[str]:
    return ["tokenizer", "--config", DEMO, f"run.dir={prepared / 'run'}", f"tokenizer.inputs=[{prepared / 'ja.txt'}]",
            "tokenizer.vocab_size=300", *overrides]


def test_an_output_folder_of_another_stage_is_refused(prepared, capsys):
    """A typo points the tokenizer's output at the data stage's: refused, the data output kept as it was."""
    before = snapshot(prepared)
    target = prepared / "run" / "data"
    code, err = run_main(capsys, stage.main, _tokenizer(prepared, f"tokenizer.output_dir={target}"))
    assert_one_clear_line(code, err, f"{target}: holds the output of stage data, not tokenizer")
    assert "choose another tokenizer.output_dir" in err and code == 2
    assert snapshot(prepared) == before


def test_an_output_folder_with_a_users_files_is_refused(prepared, capsys, tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    for name in ("README.md", "plan.txt"):
        (mine / name).write_text("mine\n")
    before = snapshot(tmp_path)
    code, err = run_main(capsys, stage.main, ["data", "--config", str(prepared / "data.yaml"),
                                              f"data.output_dir={mine}"])
    assert_one_clear_line(code, err, f"{mine}: holds 2 entries not written by data (README.md, plan.txt)")
    assert snapshot(tmp_path) == before


def test_an_output_over_its_own_input_is_refused(prepared, capsys, tmp_path):
    """The data stage re-reading its own kept.jsonl into the folder that holds it."""
    run = tmp_path / "run"
    config = yaml.safe_load((prepared / "data.yaml").read_text(encoding="utf-8"))
    config["run"]["dir"] = str(run)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert stage.main(["data", "--config", str(path)]) == 0
    kept = run / "data" / "kept.jsonl"
    before = snapshot(tmp_path)
    code, err = run_main(capsys, stage.main, ["data", "--config", str(path), f"data.inputs=[{{path: {kept}}}]"])
    assert_one_clear_line(code, err, f"data: would write {run / 'data'} over its own input {kept}")
    assert snapshot(tmp_path) == before


def test_a_stage_rerun_on_its_own_output_replaces_it_and_keeps_the_mark(prepared, capsys, tmp_path):
    out = tmp_path / "out"
    argv = ["data", "--config", str(prepared / "data.yaml"), f"data.output_dir={out}"]
    assert stage.main(argv) == 0 and stage.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([OWNER_FILE, "kept.jsonl", "manifest.json",
                                                            "rejected.jsonl"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no lock, temp or work folder left beside it"


def test_a_second_writer_of_an_output_folder_is_refused(prepared, capsys, tmp_path):
    out = tmp_path / "out"
    holder = hold_in_child(tmp_path / ".out.lock")
    try:
        code, err = run_main(capsys, stage.main, ["data", "--config", str(prepared / "data.yaml"),
                                                  f"data.output_dir={out}"])
    finally:
        holder.kill()
        holder.wait()
    assert_one_clear_line(code, err, f"data output {out}: in use by pid {holder.pid}")
    assert not out.exists()


def test_a_second_pipeline_on_a_run_folder_is_refused_and_a_dead_ones_lock_taken_over(prepared, capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    argv = ["--config", str(prepared / "data.yaml"), "--no-report", f"run.dir={run}"]
    holder = hold_in_child(run / pipeline.LOCK_NAME)
    code, err = run_main(capsys, pipeline.main, argv)
    assert_one_clear_line(code, err, f"pipeline of {run}: in use by pid {holder.pid}")
    assert [p.name for p in run.iterdir()] == [pipeline.LOCK_NAME]
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    code, err = run_main(capsys, pipeline.main, argv)
    assert code == 0, err
    assert (run / "data" / "manifest.json").is_file() and not (run / pipeline.LOCK_NAME).exists()
