"""Atomic writes, content hashes and run manifests."""

import json

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
