#!/usr/bin/env bash
# Create .venv and install the factory with its pinned engine, in the order the stack needs. Idempotent.
# uv does the installing (~40 s from scratch here, against ~95 s with pip: docs/benchmarks.md "Setup"); it reads the package sources from
# pip's own configuration (index, extra indexes, find-links, constraints), so a machine set up for pip works as is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${VENV:-.venv}
STAMP="$VENV/.setup-stamp"
WANT=$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
# pip's configuration (files and PIP_* variables) as uv options, one per line.
mapfile -t SOURCES < <("$VENV/bin/python" -m pip config list | "$VENV/bin/python" -c '
import shlex, sys
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    flag = flags.get(key.rpartition(".")[2])
    for item in shlex.split(value)[0].split() if flag and value else ():
        print(flag); print(item)
')
# unsafe-best-match: every index is searched for the best version, as pip does. Bytecode is compiled at install
# because processes never write it later where PYTHONDONTWRITEBYTECODE is set.
UV=("$VENV/bin/uv" pip install --python "$VENV/bin/python" --compile-bytecode --index-strategy unsafe-best-match
    "${SOURCES[@]}" --constraint scripts/constraints.txt)
"${UV[@]}" "pip>=24" numpy "packaging>=24.2" "torch==2.13.0"
# megatron-core's metadata asks for Python >= 3.12 yet it ships cp311 wheels (its C++ dataset helpers) that run
# here: pip installs it alone, past that check, and uv leaves it out of the project's resolution (it is there).
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --ignore-requires-python --no-deps \
  --constraint scripts/constraints.txt "megatron-core==0.19.2"
"${UV[@]}" --excludes <(echo megatron-core) -e ".[dev]"
if [ "${FACTORY_GPU:-0}" = "1" ]; then
  # Transformer Engine builds against the installed torch: pip, as its install guide does it.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -c scripts/constraints.txt -e ".[gpu]"
fi
echo "$WANT" > "$STAMP"
echo "setup: done ($VENV)"
