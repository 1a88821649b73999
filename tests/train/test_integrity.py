"""Checkpoint integrity: saves record every file's size and checksum; a damaged file is named on load, resume falls
back to the newest intact iteration, a damaged record is one line naming it and a missing one a warning."""

from __future__ import annotations

import json

import pytest

from factory.errors import CheckpointError
from factory.registry import STAGES
from factory.runner import run_stage
from factory.train import checkpoint as ckpt
from factory.train import integrity
from tests.train.conftest import losses, train_config


def _shard(folder):
    return max((p for p in folder.glob("*.distcp")), key=lambda p: p.stat().st_size)


def test_a_save_records_every_file_and_a_load_names_the_damaged_one(packed_data, tmp_path):
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2))
    folder = tmp_path / "pretrain" / "checkpoints" / "iter_0000002"
    record = json.loads((folder / integrity.INTEGRITY).read_text())
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != integrity.INTEGRITY}
    assert set(record["files"]) == names and integrity.problems(folder) == []
    shard = _shard(folder)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    shard.write_bytes(bytes(data))
    assert integrity.problems(folder, checksums=False) == []
    with pytest.raises(CheckpointError, match=rf"checkpoint {folder} is damaged: {shard}: checksum differs"):
        integrity.verify(folder)


def test_resume_falls_back_past_a_truncated_newest_iteration(packed_data, tmp_path, caplog):
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path / "straight", train_iters=6))
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=4))
    newest = tmp_path / "pretrain" / "checkpoints" / "iter_0000004"
    shard = _shard(newest)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=6))
    assert any(f"{newest} is damaged ({shard}: " in r.getMessage() for r in caplog.records)
    assert losses(tmp_path) == losses(tmp_path / "straight")  # resumed at 2 and retrained 3..6 exactly
    assert ckpt.latest_iteration(tmp_path / "pretrain" / "checkpoints") == 6


def test_export_from_a_damaged_checkpoint_names_the_file(packed_data, tmp_path):
    from factory.convert.export import export_checkpoint
    from factory.runtime.config import RuntimeConfig

    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=2))
    folder = tmp_path / "pretrain" / "checkpoints" / "iter_0000002"
    shard = _shard(folder)
    with open(shard, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match=rf"damaged: {shard}: 100 bytes, the save wrote \d+ \(truncated"):
        export_checkpoint(folder, tmp_path / "hf", runtime_cfg=RuntimeConfig(device="cpu", precision="fp32"),
                          tokenizer_dir=packed_data / "tokenizer")
    assert not (tmp_path / "hf").exists()


def _recorded_folder(folder):
    folder.mkdir()
    (folder / "__0_0.distcp").write_bytes(bytes(range(256)) * 64)
    (folder / "metadata.json").write_text('{"sharded_backend": "torch_dist"}')
    integrity.record(folder)
    return folder


@pytest.mark.parametrize(("edit", "what"), [
    (lambda r: r["files"]["__0_0.distcp"].pop("bytes"), "the entry of '__0_0.distcp' needs an integer 'bytes'"),
    (lambda r: r["files"].update({"metadata.json": "12"}), "the entry of 'metadata.json' needs an integer 'bytes'"),
    (lambda r: r.pop("files"), "no 'files' table"),
], ids=["no-bytes", "not-a-table", "no-files"])
def test_a_damaged_record_is_one_line_naming_it(tmp_path, edit, what):
    folder = _recorded_folder(tmp_path / "iter_0000002")
    path = folder / integrity.INTEGRITY
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    expected = f"{path}: unreadable integrity record ({what}"
    assert len(integrity.problems(folder)) == 1 and integrity.problems(folder)[0].startswith(expected)
    with pytest.raises(CheckpointError) as err:
        integrity.verify(folder)
    assert err.value.lines() == [f"checkpoint {folder} is damaged: {integrity.problems(folder)[0]}"]


def test_a_folder_without_a_record_is_used_with_a_warning_naming_it(tmp_path, caplog):
    folder = _recorded_folder(tmp_path / "iter_0000002")
    (folder / integrity.INTEGRITY).unlink()
    assert integrity.problems(folder, checksums=False) == [] and caplog.text == ""  # plans stay quiet
    integrity.verify(folder)  # a load: the files are used, unverified, with a warning
    assert f"{folder} has no integrity.json" in caplog.text and "unverified" in caplog.text


def test_a_load_checks_what_it_reads_once_and_resume_falls_back_past_a_corrupted_item(packed_data, tmp_path,
                                                                                      monkeypatch, caplog):
    """The corruption keeps the file's size: only the digests of the items a load reads can find it."""
    from factory.train import integrity_reader

    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path / "straight", train_iters=6))
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=4))
    newest = tmp_path / "pretrain" / "checkpoints" / "iter_0000004"
    optimizer_file = next(newest.glob("optimizer.*.distcp"))
    data = bytearray(optimizer_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optimizer_file.write_bytes(bytes(data))
    stored = sum(p.stat().st_size for p in newest.parent.glob("iter_0000002/*.distcp"))
    whole_file_checks, loads = [], []
    real_check, real_start = integrity._checksum_problem, integrity_reader.start_load
    monkeypatch.setattr(integrity, "_checksum_problem", lambda path, entry: whole_file_checks.append(path.name)
                        or real_check(path, entry))
    monkeypatch.setattr(integrity_reader, "start_load", lambda: loads.append(real_start()) or loads[-1])
    run_stage(STAGES["pretrain"], train_config(packed_data, tmp_path, train_iters=6))
    assert any(f"{newest} is damaged: {optimizer_file}: checksum differs" in r.getMessage() for r in caplog.records)
    assert losses(tmp_path) == losses(tmp_path / "straight")  # resumed at 2 and retrained 3..6 exactly
    assert not any(name.endswith(".distcp") for name in whole_file_checks)  # tensor files: checked as read
    assert 0.9 * stored < loads[-1].bytes_read <= stored  # the resume from 2 read each stored byte once
