#!/usr/bin/env bash
# Set up .venv (idempotent), fetch the demo text and run the whole CPU demo pipeline (configs/demo-cpu.yaml):
# tokenizer, data, pack, dense pretrain, synth (the dense model served as its own teacher), upcycle to MoE,
# MoE cpt (main blend, then synthetic only), export to HF, sft and dpo (with synthetic rows), eval + report,
# then generation from the exported folder.
# Re-running skips every stage whose config and inputs are unchanged. Extra arguments go to the pipeline
# (dotted overrides, --from STAGE, --only STAGE, --dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_demo_text.sh
PY=.venv/bin/python
CONFIG=${CONFIG:-configs/demo-cpu.yaml}
$PY -m factory.pipeline --config "$CONFIG" "$@"
RUN_DIR=$($PY -c "import sys; from factory.config import load_config; print(load_config(sys.argv[1], sys.argv[2:]).run.dir)" \
  "$CONFIG" $(printf '%s\n' "$@" | grep '=' || true))
if [ -f "$RUN_DIR/export/hf/config.json" ]; then
  # The exported MoE as stock transformers sees it (what a user of the folder gets).
  $PY scripts/demo_generate.py "$RUN_DIR/export/hf"
fi
echo "demo: report at $RUN_DIR/report/report.md; outputs and manifests under $RUN_DIR"
