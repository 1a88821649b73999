"""Atomic writes, content hashes and run manifests."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from factory.io import _umask, atomic_dir, atomic_write_json
from factory.manifest import RunManifest


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("partial")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp leftovers
    assert (target.stat().st_mode & 0o777) == 0o777 & ~_umask()


def test_atomic_write_json_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": "日本語"})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": "日本語"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert ((tmp_path / "x.json").stat().st_mode & 0o777) == 0o666 & ~_umask()


def test_manifest_contents(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    out = tmp_path / "stage"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"\0" * 10)
    m = RunManifest("tokenizer", {"run": {"name": "t"}}, out)
    m.add_input(src, role="corpus")
    m.add_output(out / "weights.bin")
    m.record(loss=1.5, steps=3)
    data = json.loads(m.write().read_text())
    assert data["stage"] == "tokenizer" and data["config"] == {"run": {"name": "t"}}
    assert data["inputs"] == [{"path": str(src), "role": "corpus", "sha256":
                               "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}]
    assert data["outputs"][0]["bytes"] == 10
    assert data["metrics"] == {"loss": 1.5, "steps": 3}
    assert {"python", "torch", "megatron-core", "transformers"} <= set(data["versions"])
    assert data["versions"]["megatron-core"] == "0.19.2"
    assert data["world_size"] == 1 and data["host"] and data["wall_seconds"] >= 0
    assert data["started_at"] <= data["ended_at"]


def test_stale_temps_of_dead_processes_on_this_host_are_removed(tmp_path):
    import socket
    import subprocess
    import sys

    from factory.io import remove_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    target = tmp_path / "tok"
    stale_dir = tmp_path / f".tok.{host}-{dead.pid}-a1b2.tmp"
    stale_file = tmp_path / f".tok.{host}-{dead.pid}-c3d4.tmp"
    live = tmp_path / f".tok.{host}-{os.getpid()}-e5f6.tmp"
    elsewhere = tmp_path / f".tok.other-node-{dead.pid}-g7h8.tmp"
    other_target = tmp_path / f".tokens.{host}-{dead.pid}-i9j0.tmp"
    for folder in (stale_dir, live, elsewhere, other_target):
        folder.mkdir()
    stale_file.write_text("x")
    assert sorted(remove_stale_temps(target)) == sorted([stale_dir, stale_file])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, elsewhere, other_target))


def test_output_problem_names_what_blocks_the_folder(tmp_path):
    from factory.io import output_problem

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert output_problem(tmp_path / "new" / "out") is None
    assert output_problem(blocker) == f"{blocker}: is a file, not a folder"
    assert output_problem(blocker / "a" / "b") == f"{blocker}: is a file, so the folder {blocker}/a/b cannot be made"


def test_os_error_line_names_the_path_or_the_folder_being_written(tmp_path):
    import errno

    from factory.io import os_error_line

    assert os_error_line(PermissionError(errno.EACCES, "Permission denied", "/x/y"), tmp_path) == \
        "/x/y: Permission denied"
    assert os_error_line(OSError(errno.EFBIG, "File too large"), tmp_path) == \
        f"writing {tmp_path}: File too large (disk full or over the file size limit)"


KILL_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from factory import io
real = os.replace
def replace_then_die(src, dst):
    real(src, dst)
    if str(dst).endswith(".out.old"):
        os.kill(os.getpid(), signal.SIGKILL)
io.os.replace = replace_then_die
with io.atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "a.txt").write_text("v2")
"""


def test_a_replacement_killed_between_its_renames_is_undone_by_the_next_writer(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(target)],
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and (tmp_path / ".out.old" / "a.txt").read_text() == "v1"
    with pytest.raises(RuntimeError), atomic_dir(target):
        assert (target / "a.txt").read_text() == "v1", "the earlier output is back before the new one is built"
        raise RuntimeError("this attempt fails too")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
