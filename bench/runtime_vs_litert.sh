#!/usr/bin/env bash
# kiln-runtime vs LiteRT on every converter fixture (and any extra .tflite given), measured in
# the same run, one thread each: p50 latency and the ratio LiteRT/kiln (> 1 = kiln faster).
# usage: bench/runtime_vs_litert.sh [--kernels reference|builtin|default] [MODEL.tflite ...]
set -euo pipefail
cd "$(dirname "$0")/.."
kernels=reference
if [ "${1:-}" = "--kernels" ]; then kernels=$2; shift 2; fi
python=${KILN_LITERT_PYTHON:-.venv/bin/python}
[ -x "$python" ] || { echo "needs the LiteRT venv: run scripts/test.sh once (or set KILN_LITERT_PYTHON)" >&2; exit 1; }
cargo build --quiet -p kiln-cli --bin pipeline
bin=${CARGO_TARGET_DIR:-target}/debug/pipeline
models=("$@")
if [ ${#models[@]} -eq 0 ]; then models=(tests/fixtures/*/model.tflite); fi
printf '%-36s %12s %12s %8s\n' model "kiln p50 ms" "litert p50" ratio
for model in "${models[@]}"; do
  p50='import json,sys
try: print(json.load(sys.stdin)["latency_ms_p50"])
except ValueError: print("nan")'
  ours=$("$bin" bench "$model" --runs 300 --json 2>/dev/null | "$python" -c "$p50" || true)
  theirs=$("$python" bench/litert_latency.py "$model" --kernels "$kernels" --runs 300 2>/dev/null | "$python" -c "$p50" || true)
  ratio=$("$python" -c "o,t=float('$ours'),float('$theirs'); print(f'{t/o:.2f}' if o==o and t==t else 'n/a')")
  name=$(basename "$(dirname "$model")")/$(basename "$model")
  printf '%-36s %12.4f %12.4f %8s\n' "$name" "$ours" "$theirs" "$ratio"
done
