#!/usr/bin/env bash
# Set up .venv (idempotent) and run the whole test suite, slow multi-process tests included, on two pytest-xdist
# workers, a test module to one worker, the modules with slow tests handed out first (tests/conftest.py).
# Extra arguments go to pytest; a later `-n N` overrides the worker count (`-n 0`: one process), and test paths
# replace the default, `tests` (pyproject.toml's testpaths): `bash scripts/test.sh tests/train -n 0`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One compute thread per process: two workers on two cores, each with its own subprocesses. With torch's default
# (a thread per core) the OpenMP threads of the two workers spin against each other: one in-process training
# test pair measured 79 s with the default and 14 s with one thread (docs/benchmarks.md "Test suite").
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder "$@"
