#!/usr/bin/env bash
# Prove a bare GPU node in one command of at most 10 minutes: install the wheel bundle into a target folder, run
# the doctor's GPU tier on the prepared data, and leave doctor.md (every figure, PASS/FAIL/SKIP per check),
# doctor.json and the log in $OUT (the device tool's folder) or runs/device-check.
#
# Usage: bash scripts/device_check.sh [--dry-run]
#   --dry-run   print every step with its time budget, the doctor's checks with theirs, and what the working tree
#               carries (the bundle, the prepared data) against the device tool's 64 MiB; run nothing
# Prepare first, on a machine with the project's environment and the package registry (docs/gpu.md):
#   bash scripts/gpu_bundle.sh && .venv/bin/python -m factory.doctor.prepare data/doctor --tier gpu
# Environment: PYTHON (python3: the node's, with torch), DOCTOR_MINUTES (8.5), TARGET (/tmp/factory-site),
#   OUT (where the records are copied; the device tool sets it), BUNDLE (.whl) and DATA (data/doctor): the
#   carried folders, relative to the repository.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON_SET="${PYTHON:+1}"
PYTHON="${PYTHON:-python3}"
TARGET="${TARGET:-/tmp/factory-site}"
RECORDS="runs/device-check"
BUNDLE="${BUNDLE:-.whl}"
DATA="${DATA:-data/doctor}"
CARRY=("$BUNDLE" "$DATA")
LIMIT_MIB=64
TOTAL_MINUTES=10
INSTALL_MINUTES=0.5
DOCTOR_MINUTES="${DOCTOR_MINUTES:-8.5}"
# The doctor stops starting checks at its budget; `timeout` ends a check that overruns 30 s after it.
HARD_STOP_SECONDS=$(awk -v m="$DOCTOR_MINUTES" 'BEGIN { printf "%d", m * 60 + 30 }')
INSTALL=("$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade
         --ignore-requires-python --target "$TARGET")
DOCTOR=("$PYTHON" -m factory.doctor --tier gpu --data "$DATA" --out "$RECORDS" --minutes "$DOCTOR_MINUTES")

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
bytes_of() {  # total size of the files under the given paths
  find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}

dry_run() {
  echo "device check: 3 steps within $TOTAL_MINUTES min (hard stop of the doctor at ${HARD_STOP_SECONDS} s)"
  echo "  1. [$INSTALL_MINUTES min] ${INSTALL[*]} $BUNDLE/*.whl"
  echo "  2. [$DOCTOR_MINUTES min] PYTHONPATH=$TARGET:. timeout $HARD_STOP_SECONDS ${DOCTOR[*]}"
  local lister="$PYTHON"  # the build machine's python3 may lack torch: list with the project's venv there
  if [ -z "${PYTHON_SET:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then lister="$ROOT/.venv/bin/python"; fi
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$lister" -m factory.doctor --tier gpu --list | sed 's/^/       /'
  echo "  3. copy $RECORDS/doctor.md, doctor.json and device_check.log to \$OUT (the device tool's folder)"
  local missing=0 carried=0
  echo "carried (git-ignored, named in the device tool's carry):"
  for path in "${CARRY[@]}"; do
    if [ -e "$path" ]; then
      local size files
      size=$(bytes_of "$path"); files=$(find "$path" -type f | wc -l)
      carried=$((carried + size))
      echo "  $path: $files files, $(mib "$size") MiB"
    else
      echo "  $path: MISSING (see the preparation in this script's header)"
      missing=1
    fi
  done
  local tree
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
         | awk '{ s += $1 } END { print s + 0 }')
  local total=$((tree + carried))
  echo "working tree (tracked and untracked files git does not ignore): $(mib "$tree") MiB; with the carried" \
       "paths $(mib "$total") MiB of the $LIMIT_MIB MiB the device tool sends"
  echo "run with the device tool: run(command=\"bash scripts/device_check.sh\", carry=[\"$BUNDLE\", \"$DATA\"]," \
       "timeout_s=600)"
  if (( missing )); then
    echo "device_check: a carried path is missing" >&2
    return 1
  fi
  if (( total > LIMIT_MIB * 1048576 )); then
    echo "device_check: $(mib "$total") MiB would travel, over the $LIMIT_MIB MiB limit" >&2
    return 1
  fi
}

copy_records() {  # whatever ended the run (a failed install too), the records go back
  if [ -n "${OUT:-}" ]; then
    for file in doctor.md doctor.json device_check.log; do
      if [ -f "$RECORDS/$file" ]; then cp "$RECORDS/$file" "$OUT"/; fi
    done
    echo "== records copied to \$OUT"
  fi
}

run() {
  local began=$SECONDS
  for path in "${CARRY[@]}"; do
    [ -e "$path" ] || { echo "device_check: $path is missing (see this script's header)" >&2; exit 2; }
  done
  mkdir -p "$RECORDS"
  rm -f "$RECORDS"/doctor.md "$RECORDS"/doctor.json  # records of an earlier run on this node are not this one's
  local log="$RECORDS/device_check.log"
  trap copy_records EXIT
  {
    echo "== device check $(date -Is): $("$PYTHON" --version 2>&1), $(nvidia-smi -L 2>/dev/null | head -n 8 || echo 'no nvidia-smi')"
    echo "== 1. install the bundle into $TARGET"
  } | tee "$log"
  "${INSTALL[@]}" "$BUNDLE"/*.whl 2>&1 | tee -a "$log"
  echo "== installed in $((SECONDS - began)) s; 2. the doctor's GPU tier (budget $DOCTOR_MINUTES min)" | tee -a "$log"
  local code=0
  PYTHONPATH="$TARGET:$ROOT" PYTHONUNBUFFERED=1 timeout --kill-after=10 "$HARD_STOP_SECONDS" "${DOCTOR[@]}" \
    >>"$log" 2>&1 || code=$?
  echo "== doctor exited $code after $((SECONDS - began)) s in all (124: stopped at the hard limit; doctor.md" \
       "marks the checks it did not reach)" | tee -a "$log"
  if [ -f "$RECORDS/doctor.md" ]; then cat "$RECORDS/doctor.md"; fi
  return "$code"
}

case "${1:-}" in
  --dry-run) dry_run ;;
  "") run ;;
  *) echo "usage: bash scripts/device_check.sh [--dry-run]" >&2; exit 2 ;;
esac
