#!/usr/bin/env bash
# Create .venv and install the factory with its pinned engine, in the order the stack needs. Idempotent.
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
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -c scripts/constraints.txt)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
# numpy and packaging first: megatron-core's metadata asks for Python >= 3.12, so it is installed with
# --ignore-requires-python, and without these pip would try to build numpy from source.
"${PIP[@]}" numpy "packaging>=24.2" "torch==2.13.0"
"${PIP[@]}" --ignore-requires-python --no-deps "megatron-core==0.19.2"
"${PIP[@]}" -e ".[dev]"  # megatron-core is already installed, so its Requires-Python is not re-checked
if [ "${FACTORY_GPU:-0}" = "1" ]; then
  "${PIP[@]}" -e ".[gpu]"
fi
echo "$WANT" > "$STAMP"
echo "setup: done ($VENV)"
