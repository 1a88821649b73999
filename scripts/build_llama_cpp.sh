#!/usr/bin/env bash
# Build llama.cpp from the vendored source of the llama-cpp-python sdist (shared library + llama-tokenize, CPU,
# f32-capable) into a git-ignored cache folder; tests/convert/test_llama_cpp.py runs when this build is present.
# Usage: bash scripts/build_llama_cpp.sh   (needs cmake, a C++17 compiler; ~15 min on 2 cores)
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="$ROOT/.cache/llama.cpp"
SRC="$CACHE/llama_cpp_python-$VERSION"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$CACHE"
if [ ! -d "$SRC" ]; then
  "$PY" -m pip download "llama-cpp-python==$VERSION" --no-binary :all: --no-deps --no-build-isolation -d "$CACHE"
  tar -xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE"
fi
LLAMA="$SRC/vendor/llama.cpp"
cmake -S "$LLAMA" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_CCACHE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
cmake --build "$LLAMA/build" --target llama llama-tokenize -j "${JOBS:-$(nproc)}"
echo "llama.cpp built: library and llama-tokenize in $LLAMA/build/bin"
echo "converter: $LLAMA/convert_hf_to_gguf.py (PYTHONPATH=$LLAMA/gguf-py); Python bindings: $SRC (LLAMA_CPP_LIB_PATH=$LLAMA/build/bin)"
