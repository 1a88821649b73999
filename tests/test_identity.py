"""Cheap input identities: small files by content, big ones by sampled blocks, stage folders by manifest,
checkpoints by their newest iteration; bounded bytes read on a 200 GB sparse file."""

from __future__ import annotations

import hashlib
import os

from factory.identity import identity


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_content_hash_files_and_dirs(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    h1 = identity(d)
    (d / "sub" / "f").write_text("y")
    assert identity(d) != h1
    (d / "manifest.json").write_text("{}")  # a stage dir is identified by its manifest
    assert identity(d) == identity(d / "manifest.json")
    assert identity(d / "sub" / "f") == hashlib.sha256(b"y").hexdigest()


def test_a_200_gb_file_is_identified_from_a_bounded_sample(tmp_path):
    big = tmp_path / "corpus.jsonl"
    with open(big, "wb") as f:
        f.truncate(200 << 30)  # sparse: 200 GB of zeros, no disk used
    before = _bytes_read()
    first = identity(big)
    assert _bytes_read() - before < 64 << 20
    with open(big, "r+b") as f:  # a change inside a sampled block changes the identity
        f.seek((200 << 30) - 10)
        f.write(b"x")
    assert identity(big) != first
    folder_before = _bytes_read()
    identity(tmp_path)
    assert _bytes_read() - folder_before < 64 << 20


def test_a_checkpoint_root_is_identified_by_its_newest_iteration_only(tmp_path):
    root = tmp_path / "checkpoints"
    old, new = root / "iter_0000100", root / "iter_0000200"
    for it in (old, new):
        it.mkdir(parents=True)
        (it / "metadata.json").write_text('{"sharded_backend": "torch_dist"}')
        (it / "__0_0.distcp").write_bytes(b"w" * 100)
    with open(old / "__0_1.distcp", "wb") as f:
        f.truncate(200 << 30)
    (root / "latest_checkpointed_iteration.txt").write_text("200\n")
    before = _bytes_read()
    first = identity(root)
    assert _bytes_read() - before < 1 << 20
    (new / "__0_0.distcp").write_bytes(b"w" * 99)  # a truncated shard of the newest iteration shows
    assert identity(root) != first
    os.remove(new / "__0_0.distcp")
    assert identity(root) != first
