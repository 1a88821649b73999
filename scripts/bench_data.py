"""Benchmark (not a test): the `data` stage as a process, documents/s per core, wall time and memory per worker.

    .venv/bin/python scripts/bench_data.py [--config configs/demo-cpu.yaml] [--repo DIR] [KEY=VALUE ...]

Runs `python -m factory.stage data --config CONFIG data.output_dir=TMP [KEY=VALUE ...]` in `--repo` (default:
this checkout; give an older checkout of the repository to measure the stage before a change) and samples the
whole process tree every 0.1 s with psutil: the CPU seconds of every process (the stage, its datatrove pool
workers and forkservers), and the peak resident memory of the largest single process. Documents/s per core is
documents in / CPU seconds of the tree, so it does not depend on how busy the machine's other cores are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def run_sampled(cmd: list[str], cwd: Path) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds of the process tree, peak RSS of one process, processes seen)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak_rss = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                times, rss = p.cpu_times(), p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            cpu[p.pid] = max(cpu.get(p.pid, 0.0), times.user + times.system)
            peak_rss = max(peak_rss, rss)
        time.sleep(0.1)
    stderr = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"the data stage failed:\n{stderr}")
    return time.perf_counter() - start, sum(cpu.values()), peak_rss, len(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo-cpu.yaml")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose factory package runs")
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE config overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data"
        cmd = [sys.executable, "-m", "factory.stage", "data", "--config", args.config, f"data.output_dir={out}",
               *args.overrides]
        wall, cpu, peak_rss, processes = run_sampled(cmd, args.repo.resolve())
        metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    docs = metrics["in"]
    print(f"repo {args.repo}: {docs} docs in, {metrics['kept']} kept")
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s over {processes} processes, peak RSS of one process "
          f"{peak_rss / 2**20:.0f} MiB")
    print(f"docs/s per core {docs / cpu:,.0f}; docs/s wall {docs / wall:,.0f}")
    print("rejected: " + ", ".join(f"{k.removeprefix('rejected.')} {v}" for k, v in metrics.items()
                                   if k.startswith("rejected.") and v))


if __name__ == "__main__":
    main()
