#!/usr/bin/env bash
# kiln-runtime vs LiteRT on every converter fixture (and any extra .tflite given), measured in
# the same run: p50 latency of kiln-runtime and of LiteRT's reference kernels, its optimized
# builtin kernels and its default XNNPACK path, kiln's time as a multiple of each (< 1 = kiln
# faster), and the geometric mean of those ratios; on one thread, then on every core.
# usage: bench/runtime_vs_litert.sh [--threads 1,all] [--runs N] [MODEL.tflite ...]
#   --threads LIST   comma-separated thread counts for both runtimes (default 1,all)
set -euo pipefail
cd "$(dirname "$0")/.."
options=()
while [ $# -gt 0 ] && [[ "$1" == --* ]]; do options+=("$1" "$2"); shift 2; done
python=${KILN_LITERT_PYTHON:-.venv/bin/python}
[ -x "$python" ] || { echo "needs the LiteRT venv: run scripts/test.sh once (or set KILN_LITERT_PYTHON)" >&2; exit 1; }
cargo build --quiet -p kiln-cli --bin pipeline
bin=${CARGO_TARGET_DIR:-target}/debug/pipeline
models=("$@")
if [ ${#models[@]} -eq 0 ]; then models=(tests/fixtures/*/model.tflite); fi
"$python" bench/runtime_vs_litert.py "$bin" "${options[@]}" "${models[@]}"
