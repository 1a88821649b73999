"""`python -m factory.train.verify_checkpoint`: one line per iteration, exit 0 only when every one is intact."""

from __future__ import annotations

from factory.train import integrity
from factory.train.checkpoint_root import TRACKER
from factory.train.verify_checkpoint import main


def _iteration(root, iteration: int):
    folder = root / f"iter_{iteration:07d}"
    folder.mkdir(parents=True)
    (folder / "__0_0.distcp").write_bytes(bytes(range(256)) * 16)
    (folder / "metadata.json").write_text("{}")
    integrity.record(folder)
    return folder


def test_every_iteration_gets_one_line_and_a_damaged_one_exits_1(tmp_path, capsys):
    folders = [_iteration(tmp_path, it) for it in (2, 4, 6)]
    (tmp_path / TRACKER).write_text("6\n")
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "iter_0000002: intact (3 files, 0.0 MB)", "iter_0000004: intact (3 files, 0.0 MB)",
        "iter_0000006: intact (3 files, 0.0 MB)", "3 of 3 iterations intact; the committed one is 6"]
    shard = folders[1] / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # same size: only the checksum tells
    shard.write_bytes(bytes(data))
    (folders[2] / integrity.INTEGRITY).unlink()
    assert main([str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"iter_0000004: damaged: {shard}: checksum differs from the one the save recorded (corrupted)"
    assert lines[2].startswith("iter_0000006: unverified: no integrity.json")
    assert lines[3] == "1 of 3 iterations intact; the committed one is 6"
    assert main([str(folders[0])]) == 0  # one iteration folder
    assert capsys.readouterr().out.splitlines() == ["iter_0000002: intact (3 files, 0.0 MB)"]


def test_a_path_without_iterations_is_one_error_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {tmp_path}: not a checkpoint (no iter_NNNNNNN folder)"]
