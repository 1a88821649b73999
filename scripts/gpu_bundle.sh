#!/usr/bin/env bash
# Download the wheels a bare GPU node lacks for `python -m factory.doctor --tier gpu --data DIR` into .whl/.
#
# Usage: bash scripts/gpu_bundle.sh [DEST]     (DEST defaults to .whl/ in the repository root)
# Environment: PYTHON_VERSION (default 3.12, the node's Python), PYTHON (default python3; the pip to run).
# A bare node has Python, torch and transformers (with their own dependencies) and no network. With a prepared
# --data folder the GPU tier runs no tokenizer or pack stage, so MeCab (fugashi + unidic-lite, a 47 MiB sdist),
# pyarrow and gigatoken are not needed there; datasets and trl are not imported by the tier.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.whl}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
PYTHON="${PYTHON:-python3}"
LIMIT_MIB=40
ABI="cp${PYTHON_VERSION/./}"

MEGATRON="$(grep -E '^megatron-core==' "$ROOT/scripts/constraints.txt")"
# Each pin is the version the project's environment is tested with; --no-deps keeps torch and numpy out.
WHEELS=(
  "$MEGATRON"
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5  # every config
  sentencepiece==0.2.3                                                                    # the tokenizer
  xxhash==4.1.0 psutil==7.2.2                                                          # checkpoint integrity, saves
  rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0                        # logs and progress
)

mkdir -p "$DEST"
# --ignore-requires-python: megatron-core asks for Python >= 3.12 yet ships (and runs from) cp311 wheels too,
# which CI's bundle test installs; for the node's 3.12 it changes nothing.
"$PYTHON" -m pip download --quiet --no-deps --ignore-requires-python --dest "$DEST" \
  --python-version "$PYTHON_VERSION" --implementation cp --abi "$ABI" --abi abi3 --abi none \
  --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  "${WHEELS[@]}"

shopt -s nullglob
files=("$DEST"/*.whl)
if (( ${#files[@]} != ${#WHEELS[@]} )); then
  echo "gpu_bundle: $DEST holds ${#files[@]} wheels, expected ${#WHEELS[@]} (remove stale ones and rerun)" >&2
  exit 1
fi
bytes=$(cat "${files[@]}" | wc -c)
mib=$(( (bytes + 1048575) / 1048576 ))
if (( bytes >= LIMIT_MIB * 1048576 )); then
  echo "gpu_bundle: $DEST is $mib MiB, over the $LIMIT_MIB MiB limit" >&2
  exit 1
fi
echo "gpu_bundle: ${#files[@]} wheels, $mib MiB in $DEST (Python $PYTHON_VERSION)"
echo "install on the node: pip install --no-index --no-deps --target DIR ${DEST#"$ROOT/"}/*.whl"
