"""`python -m factory.evaldata`: fetch without network is one line naming the URL and the --from way out;
fetch --from the full data then verify pass with the real table; verify names a damaged file; path resolves
--dir, then FACTORY_EVAL_DATA, then the cache."""

from __future__ import annotations

import os
import subprocess
import sys

from factory.evaldata.__main__ import main
from factory.evaldata.table import JGLUE
from tests.evaldata.conftest import raw_server, upstream_path, write_upstream
from tests.posttrain.conftest import free_port


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory.evaldata", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_fetch_without_network_fails_in_one_line(tmp_path):
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, as on a machine offline
    done = _cli("fetch", "--dir", str(tmp_path / "eval-data"), FACTORY_EVAL_DATA_URL=base)
    url = f"{base}/{JGLUE.repository}/{JGLUE.commit}/LICENSE"
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: cannot download {url} ({JGLUE.repository}): [Errno 111] Connection refused; run the fetch again to "
        "resume, or without network install from a local copy: python -m factory.evaldata fetch --from DIR"]
    assert not (tmp_path / "eval-data").exists()


def test_fetch_from_the_full_data_then_verify_and_a_damaged_file_is_named(full_eval_data, tmp_path):
    dest = tmp_path / "x"
    done = _cli("fetch", "--from", str(full_eval_data), "--dir", str(dest))
    assert done.returncode == 0 and done.stdout.startswith(f"eval data: {dest} complete (")
    done = _cli("verify", "--dir", str(dest))
    assert done.returncode == 0 and done.stdout.startswith(f"eval data: {dest}: every file matches")
    damaged = dest / "jglue" / "jnli-valid-v1.3.json"
    damaged.write_bytes(damaged.read_bytes().replace(b"neutral", b"entailment", 1))
    done = _cli("verify", "--dir", str(dest))
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: {damaged}: sha256 ") and done.stderr.rstrip().endswith(
        ", expected ca0353efc7c2eebfb6de4e13f16295053c8b1ee65e7b0849190c90426fbc495f")


def test_fetch_over_http_then_a_tampered_file_is_one_error_line(table, tmp_path, capsys):
    raw = write_upstream(tmp_path / "raw")
    with raw_server(raw) as (base, _):
        assert main(["fetch", "--dir", str(tmp_path / "a"), "--base-url", base]) == 0
        assert capsys.readouterr().out == f"eval data: {tmp_path / 'a'} complete (4 files installed, 0 already there)\n"
        (raw / upstream_path(table[0]).lstrip("/")).write_bytes(b"another licence\n")
        assert main(["fetch", "--dir", str(tmp_path / "b"), "--base-url", base]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/LICENSE: sha256 " in errors[0] and not (tmp_path / "b").exists()


def test_path_is_the_dir_option_else_the_environment_else_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FACTORY_EVAL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    printed = []
    for env in (None, str(tmp_path / "env")):
        if env:
            monkeypatch.setenv("FACTORY_EVAL_DATA", env)
        main(["path"])
        main(["path", "--dir", str(tmp_path / "given")])
        printed += capsys.readouterr().out.splitlines()
    assert printed == [str(tmp_path / "xdg" / "jp-model-factory" / "eval-data"), str(tmp_path / "given"),
                       str(tmp_path / "env"), str(tmp_path / "given")]
