#!/usr/bin/env bash
# Set up .venv (idempotent) and run the CPU demo (configs/demo-cpu.yaml) through the stages that exist.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_demo_text.sh
PY=.venv/bin/python
CONFIG=${CONFIG:-configs/demo-cpu.yaml}
for stage in tokenizer data pack; do
  $PY -m factory.stage "$stage" --config "$CONFIG" "$@"
done
# The model the training stages will build from these data, as Megatron-Core runs it here.
$PY scripts/bench_model.py "$CONFIG" --steps 5
echo "demo: outputs and manifests under $($PY -c "from factory.config import load_config; print(load_config('$CONFIG').run.dir)")"
