"""A stand-in for raw.githubusercontent.com on loopback (http.server in a thread) and a small file table to
fetch from it, pinned the way the real table is."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from factory.evaldata import install
from factory.evaldata.table import EvalFile, Source

SOURCE = Source("test-owner/bench", "0123456789abcdef0123456789abcdef01234567", "2025-01-01", "CC-BY-SA-4.0")
CONTENTS = {
    "LICENSE": b"Attribution-ShareAlike 4.0 International\n",
    "datasets/qa/valid.json": '{"question": "雨の日に差すものは？", "label": 1}\n'.encode() * 50,
    "datasets/qa/train.json": '{"question": "魚が泳ぐ場所は？", "label": 2}\n'.encode() * 80,
    "datasets/nli/train.json": b'{"sentence1": "a", "sentence2": "b", "label": "neutral"}\n' * 30,
}
"""Upstream path -> bytes; nli/train is pinned by its git blob id only, as the real JNLI train split is."""


def pinned_table() -> tuple[EvalFile, ...]:
    """EvalFiles for CONTENTS, their checksums computed here with hashlib."""
    def entry(upstream: str, local: str, required: bool = True, with_sha256: bool = True) -> EvalFile:
        data = CONTENTS[upstream]
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return EvalFile(local, SOURCE, upstream, blob, hashlib.sha256(data).hexdigest() if with_sha256 else None,
                        required)

    return (entry("LICENSE", "jglue/LICENSE"), entry("datasets/qa/valid.json", "jglue/qa-valid.json"),
            entry("datasets/qa/train.json", "jglue/qa-train.json", required=False),
            entry("datasets/nli/train.json", "jglue/nli-train.json", required=False, with_sha256=False))


@pytest.fixture
def table(monkeypatch) -> tuple[EvalFile, ...]:
    """The small table in place of the real one, for fetch and verify."""
    files = pinned_table()
    monkeypatch.setattr(install, "FILES", files)
    return files


def write_upstream(root: Path) -> Path:
    """CONTENTS laid out as raw.githubusercontent.com serves them: <owner>/<name>/<commit>/<path>."""
    for upstream, data in CONTENTS.items():
        path = root / SOURCE.repository / SOURCE.commit / upstream
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@dataclass
class Served:
    """What the stand-in was asked for, and which paths it cuts off once halfway through."""

    requests: list[str] = field(default_factory=list)
    cut_once: set[str] = field(default_factory=set)


@contextlib.contextmanager
def raw_server(root: Path):
    """(base URL, Served) of a loopback HTTP server on `root`, stopped when the block ends."""
    served = Served()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            served.requests.append(self.path)
            if self.path not in served.cut_once:
                return super().do_GET()
            served.cut_once.discard(self.path)
            data = (root / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])  # then the connection closes: a download that broke off
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def upstream_path(entry: EvalFile) -> str:
    """The request path of `entry` on the stand-in."""
    return f"/{entry.source.repository}/{entry.source.commit}/{entry.upstream}"
