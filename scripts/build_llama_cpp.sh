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
  # The sdist straight from PyPI, checked against its published sha256 (pip download would build its metadata).
  "$PY" - "$VERSION" "$CACHE" <<'PYEOF'
import hashlib, json, sys, urllib.request
version, cache = sys.argv[1:]
index = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                               headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(index))["files"]
sdist = next(f for f in files if f["filename"] == f"llama_cpp_python-{version}.tar.gz")
data = urllib.request.urlopen(sdist["url"]).read()
if hashlib.sha256(data).hexdigest() != sdist["hashes"]["sha256"]:
    sys.exit(f"build_llama_cpp: sha256 mismatch for {sdist['filename']}")
open(f"{cache}/{sdist['filename']}", "wb").write(data)
PYEOF
  tar -xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE"
fi
LLAMA="$SRC/vendor/llama.cpp"
cmake -S "$LLAMA" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_CCACHE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
cmake --build "$LLAMA/build" --target llama llama-tokenize -j "${JOBS:-$(nproc)}"
# The sdist's Python bindings import diskcache (pure Python); it goes beside them, not into the project's venv.
"$PY" -m pip install -q --target "$CACHE/site" diskcache
echo "llama.cpp built: library and llama-tokenize in $LLAMA/build/bin"
echo "compare an export: $PY scripts/compare_llama_cpp.py HF_FOLDER --lines TEXT_FILE"
