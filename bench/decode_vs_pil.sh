#!/usr/bin/env bash
# Decode + resize throughput, kiln-data vs Pillow, on the same JPEGs in the same run:
# `pipeline bench-decode` (1 thread and all cores) against Pillow (1 thread), at 96 and
# 224 px. Needs the repo's .venv (scripts/test.sh makes it); installs Pillow into it.
#   bash bench/decode_vs_pil.sh [IMAGES]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
images=${1:-400}
py=${KILN_LITERT_PYTHON:-$root/.venv/bin/python}
"$py" -c 'import PIL' 2>/dev/null || "$py" -m pip install --quiet pillow
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" bench/pil_decode.py make "$dir" --images "$images"
cargo run --quiet -p kiln-cli --bin pipeline -- bench-decode --folder "$dir" --images "$images" \
  --sizes 96,224 --json > "$dir/kiln.json"
"$py" bench/pil_decode.py time "$dir" --sizes 96,224 > "$dir/pil.json"
"$py" - "$dir/kiln.json" "$dir/pil.json" <<'PY'
import json, sys
kiln, pil = (json.load(open(p)) for p in sys.argv[1:3])
print(f"decode + centre-crop + bilinear resize to RGB, {pil['images']} JPEGs 500x375 q90 (Pillow {pil['pillow']})")
print(f"{'size':>5} {'kiln 1 thread':>14} {'Pillow 1 thread':>16} {'ratio':>6} {'kiln all cores':>15}")
for k, p in zip(kiln["results"], pil["results"]):
    one, peer = k["images_per_second_1_thread"], p["images_per_second_1_thread"]
    print(f"{k['size']:>5} {one:>12.1f}/s {peer:>14.1f}/s {one / peer:>5.2f}x {k['images_per_second_all_cores']:>13.1f}/s")
PY
