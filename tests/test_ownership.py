"""Which folders a stage may write: absent, empty, marked as its own, or (written before marks) its manifest or
nothing but its own outputs; never a folder of another stage or of a user, never over its inputs."""

from __future__ import annotations

import json

import pytest

from factory.io import OWNER_FILE
from factory.ownership import marked, overlap_problems, ownership_problem


def test_absent_empty_and_marked_folders_are_the_stages(tmp_path):
    assert ownership_problem(tmp_path / "absent", "data", "data.output_dir") is None
    assert ownership_problem(tmp_path, "data", "data.output_dir") is None
    (tmp_path / OWNER_FILE).write_text(json.dumps({"stage": "data"}))
    (tmp_path / "kept.jsonl").write_text("{}\n")
    assert ownership_problem(tmp_path, "data", "data.output_dir") is None
    assert ownership_problem(tmp_path, "pack", "pack.output_dir") == (
        f"{tmp_path}: holds the output of stage data, not pack; pack writes only into an absent or empty folder "
        "or its own earlier output: choose another pack.output_dir")


def test_folders_written_before_marks_are_known_by_manifest_or_by_their_files(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "pretrain", "config": {}}))
    (tmp_path / "checkpoints").mkdir()
    assert ownership_problem(tmp_path, "pretrain", "pretrain.output_dir") is None
    assert "holds the output of stage pretrain" in ownership_problem(tmp_path, "export", "export.output_dir")
    (tmp_path / "manifest.json").unlink()  # a first run killed before its manifest
    (tmp_path / ".iter_0000004.partial").mkdir()
    assert ownership_problem(tmp_path, "pretrain", "x", own_names={"checkpoints", "metrics.jsonl"}) is None
    assert ownership_problem(tmp_path, "cpt", "cpt.output_dir", own_names={"metrics.jsonl"}).startswith(
        f"{tmp_path}: holds 1 entry not written by cpt (checkpoints)")


@pytest.mark.parametrize("names", [[".git"], ["README.md", ".git"], [f"f{i}" for i in range(7)]])
def test_anything_else_is_a_users_folder(tmp_path, names):
    for name in names:
        (tmp_path / name).mkdir()
    problem = ownership_problem(tmp_path, "tokenizer", "tokenizer.output_dir", own_names={"tokenizer.model"})
    assert problem.startswith(f"{tmp_path}: holds {len(names)} entr")
    assert ("and 2 more" in problem) == (len(names) == 7)


def test_overlap_of_outputs_and_inputs_in_both_directions(tmp_path):
    out, corpus = tmp_path / "out", tmp_path / "out" / "corpus.jsonl"
    assert overlap_problems("data", [out], [corpus]) == [
        f"data: would write {out} over its own input {corpus}; give the output another folder"]
    assert overlap_problems("data", [corpus], [out]) != []
    assert overlap_problems("data", [out], [tmp_path / "outside.jsonl"]) == []


def test_a_failed_first_run_takes_its_mark_and_folder_away_again(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), marked(out, "data", "run"):
        assert json.loads((out / OWNER_FILE).read_text())["stage"] == "data"
        raise RuntimeError("failed")
    assert not out.exists()
    out.mkdir()
    with pytest.raises(RuntimeError), marked(out, "data", "run"):
        (out / "kept.jsonl").write_text("{}\n")
        raise RuntimeError("failed after writing")
    assert sorted(p.name for p in out.iterdir()) == [OWNER_FILE, "kept.jsonl"], "what it wrote stays marked"
