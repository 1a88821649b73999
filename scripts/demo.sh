#!/usr/bin/env bash
# Set up .venv (idempotent) and run the CPU demo (configs/demo-cpu.yaml) through the stages that exist.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_demo_text.sh
PY=.venv/bin/python
CONFIG=${CONFIG:-configs/demo-cpu.yaml}
$PY -m factory.stage tokenizer --config "$CONFIG" "$@"
# The model the later stages train, as Megatron-Core builds it on this machine (fwd+bwd figures).
$PY scripts/bench_model.py "$CONFIG" --steps 5
echo "demo: outputs under $($PY -c "from factory.config import load_config; print(load_config('$CONFIG').run.dir)")"
