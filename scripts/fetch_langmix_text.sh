#!/usr/bin/env bash
# Build the language-mixing evaluation set from Debian packages (offline-safe: only the Debian archive is
# used): Japanese documentation the demo does not train on, spelling dictionaries and fortune files are
# downloaded and unpacked, then scripts/langmix_eval_set.py writes OUT_DIR/tune.jsonl and OUT_DIR/heldout.jsonl.
# The packages' licenses differ, so the generated files stay out of the repository (data/ is ignored).
# Usage: scripts/fetch_langmix_text.sh [OUT_DIR] [--seed N] [--per-kind N] [--max-pages N] [--max-words N]
# (default data/langmix; the options are langmix_eval_set.py's, --max-* for a quick trial set)
# env LANGMIX_ROOT=DIR keeps the unpacked packages in DIR (for `bench_langmix.py --real DIR`); default: a
# temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/langmix}"
shift || true
python="${PYTHON:-.venv/bin/python}"
read -r -a docs <<< "$("$python" scripts/langmix_eval_set.py --list-packages docs)"
read -r -a words <<< "$("$python" scripts/langmix_eval_set.py --list-packages words)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="${LANGMIX_ROOT:-$work/root}"
mkdir -p "$work/debs" "$root"
if ! (cd "$work/debs" && apt-get download -q "${docs[@]}" "${words[@]}" >/dev/null 2>&1); then
  apt-get update -qq
  (cd "$work/debs" && apt-get download -q "${docs[@]}" "${words[@]}" >/dev/null)
fi
for package in "${docs[@]}"; do
  dpkg-deb -x "$work/debs/${package}"_*.deb "$root/$package"
done
for package in "${words[@]}"; do
  dpkg-deb -x "$work/debs/${package}"_*.deb "$root"
done
"$python" scripts/langmix_eval_set.py "$root" "$out" "$@"
