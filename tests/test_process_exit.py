"""A command ended by exit_process ends as a normal exit would: its code, threads joined, atexit run, output out."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_exit_process_joins_threads_runs_atexit_and_flushes(tmp_path):
    program = textwrap.dedent(f"""
        import atexit, threading, time
        from pathlib import Path
        from factory.process_exit import exit_process

        def late_write():
            time.sleep(0.3)
            Path({str(tmp_path / "thread")!r}).write_text("joined")

        threading.Thread(target=late_write).start()
        atexit.register(lambda: Path({str(tmp_path / "atexit")!r}).write_text("ran"))
        print("buffered, no newline", end="")
        exit_process(3)
        print("never")
    """)
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
