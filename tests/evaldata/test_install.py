"""fetch and verify against a loopback stand-in for raw.githubusercontent.com and a local mirror: every file
checked before it is renamed into place, a broken-off fetch resumed without fetching finished files again, a
checksum mismatch refused with nothing installed, the folder marked complete only at the end."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from factory.errors import DataError, VerificationError
from factory.evaldata.install import Mirror, Upstream, digests, fetch, verify
from factory.evaldata.location import MARKER
from tests.evaldata.conftest import CONTENTS, SOURCE, raw_server, upstream_path, write_upstream


def _no_temps(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_fetch_installs_every_file_checked_and_marks_the_folder_complete(table, tmp_path):
    dest = tmp_path / "eval-data"
    with raw_server(write_upstream(tmp_path / "raw")) as (base, served):
        summary = fetch(dest, Upstream(base))
        assert summary.installed == [e.local for e in table] and summary.absent == []
        assert all((dest / e.local).read_bytes() == CONTENTS[e.upstream] for e in table)
        assert verify(dest) == [] and json.loads((dest / MARKER).read_text())["source"] == base
        readme = (dest / "README.md").read_text()
        assert all(f"`{e.local}` | {SOURCE.repository} | `{SOURCE.commit}`" in readme for e in table)
        served.requests.clear()
        again = fetch(dest, Upstream(base))
    assert served.requests == [] and again.installed == [] and again.kept == [e.local for e in table]


def test_a_fetch_that_broke_off_resumes_without_fetching_finished_files_again(table, tmp_path):
    dest, broken = tmp_path / "eval-data", table[2]
    with raw_server(write_upstream(tmp_path / "raw")) as (base, served):
        served.cut_once.add(upstream_path(broken))
        size = len(CONTENTS[broken.upstream])
        with pytest.raises(DataError, match=rf"^cannot download {base}{upstream_path(broken)} \({SOURCE.repository}\): "
                                            rf"connection closed after {size // 2} of {size} bytes; run the fetch "
                                            "again to resume, or without network install from a local copy: "
                                            r"python -m factory.evaldata fetch --from DIR$"):
            fetch(dest, Upstream(base))
        assert [(dest / e.local).exists() for e in table] == [True, True, False, False]
        assert _no_temps(dest) and not (dest / MARKER).exists()
        served.requests.clear()
        summary = fetch(dest, Upstream(base))
    assert served.requests == [upstream_path(e) for e in table[2:]]
    assert summary.installed == [e.local for e in table[2:]] and verify(dest) == []


@pytest.mark.parametrize("index, pin", [(1, "sha256"), (3, "git_blob")])
def test_a_checksum_mismatch_is_refused_and_nothing_installed(table, tmp_path, index, pin):
    dest, bad = tmp_path / "eval-data", table[index]
    raw = write_upstream(tmp_path / "raw")
    tampered = CONTENTS[bad.upstream].replace(b"label", b"lab3l")
    (raw / upstream_path(bad).lstrip("/")).write_bytes(tampered)
    got = (hashlib.sha256(tampered).hexdigest() if pin == "sha256"
           else hashlib.sha1(b"blob %d\0" % len(tampered) + tampered).hexdigest())
    with raw_server(raw) as (base, _), pytest.raises(VerificationError) as info:
        fetch(dest, Upstream(base))
    assert str(info.value) == (f"{base}{upstream_path(bad)}: {pin} {got}, expected {getattr(bad, pin)} "
                               f"(factory/evaldata/table.py); not installed, {dest} is not complete")
    assert not (dest / bad.local).exists() and not (dest / MARKER).exists() and _no_temps(dest)


def _mirror(tmp_path, table, leave_out: set[str]):
    mirror = tmp_path / "mirror"
    for e in table:
        if e.local not in leave_out:
            (mirror / e.local).parent.mkdir(parents=True, exist_ok=True)
            (mirror / e.local).write_bytes(CONTENTS[e.upstream])
    return mirror


def test_a_mirror_may_lack_optional_files_but_not_required_ones(table, tmp_path):
    dest = tmp_path / "eval-data"
    summary = fetch(dest, Mirror(_mirror(tmp_path, table, {"jglue/nli-train.json"})))
    assert summary.absent == ["jglue/nli-train.json"] and verify(dest) == []
    assert json.loads((dest / MARKER).read_text())["absent_optional"] == ["jglue/nli-train.json"]
    assert "Optional files not installed (the source has none): jglue/nli-train.json" in (dest / "README.md").read_text()
    shutil.rmtree(tmp_path / "mirror")
    other = tmp_path / "other"
    with pytest.raises(DataError, match=rf"^{tmp_path / 'mirror'}: has no jglue/qa-valid.json \(required\); "
                                        "nothing installed$"):
        fetch(other, Mirror(_mirror(tmp_path, table, {"jglue/qa-valid.json"})))
    assert not other.exists()


def test_verify_names_each_bad_file_and_fetch_replaces_only_those(table, tmp_path):
    dest, mirror = tmp_path / "eval-data", _mirror(tmp_path, table, set())
    fetch(dest, Mirror(mirror))
    (dest / "jglue/LICENSE").unlink()
    (dest / "jglue/nli-train.json").write_bytes(b"damaged\n")
    blob = hashlib.sha1(b"blob 8\0damaged\n").hexdigest()
    assert verify(dest) == [f"{dest / 'jglue/LICENSE'}: missing",
                            f"{dest / 'jglue/nli-train.json'}: git_blob {blob}, expected {table[3].git_blob}"]
    summary = fetch(dest, Mirror(mirror))
    assert summary.installed == ["jglue/LICENSE", "jglue/nli-train.json"] and verify(dest) == []
    (dest / MARKER).unlink()
    assert verify(dest) == [f"{dest / MARKER}: missing (no fetch completed this folder; run python -m "
                            "factory.evaldata fetch)"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_git_blob_id_is_the_one_git_computes(tmp_path):
    path = tmp_path / "file.json"
    path.write_bytes(CONTENTS["datasets/qa/valid.json"])
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    with open(path, "rb") as f:
        assert digests(f) == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "git_blob": git}
