#!/usr/bin/env bash
# Fetch real Japanese and English text for the demo from Debian documentation packages (offline-safe:
# only the Debian archive is used) into data/demo/ja.txt and data/demo/en.txt. Skips if both exist.
# Usage: scripts/fetch_demo_text.sh [OUT_DIR]   (env: JA_BYTES, EN_BYTES caps; default 3 MB + 1.5 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/demo}"
if [[ -s "$out/ja.txt" && -s "$out/en.txt" ]]; then
  echo "demo text already present in $out; skipping"
  exit 0
fi
packages=(debian-reference-ja maint-guide-ja manpages-ja python3.11-doc)
python="${PYTHON:-.venv/bin/python}"
[[ -x "$python" ]] || python=python3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -q "${packages[@]}" >/dev/null 2>&1); then
  apt-get update -qq
  (cd "$work" && apt-get download -q "${packages[@]}" >/dev/null)
fi
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$work/root"
done
"$python" scripts/demo_text.py "$work/root" "$out" --ja-bytes "${JA_BYTES:-3000000}" --en-bytes "${EN_BYTES:-1500000}"
