#!/usr/bin/env bash
# Set up .venv (idempotent) and run the whole test suite, slow multi-process tests included, on two pytest-xdist
# workers, a test module to one worker, the modules with slow tests handed out first (tests/conftest.py).
# Extra arguments go to pytest; a later `-n N` overrides the worker count (`-n 0`: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder tests "$@"
