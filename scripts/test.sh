#!/usr/bin/env bash
# Runs every test of the workspace, including the LiteRT conformance tests.
# Creates .venv with the official LiteRT interpreter (ai-edge-litert) and numpy from PyPI
# when it is missing: LiteRT is the oracle the tests compare kiln-runtime with.
set -euo pipefail
cd "$(dirname "$0")/.."

LITERT_VERSION=2.3.0
if ! .venv/bin/python -c "import ai_edge_litert.interpreter, numpy" >/dev/null 2>&1; then
  echo "creating .venv with ai-edge-litert==${LITERT_VERSION} and numpy" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "ai-edge-litert==${LITERT_VERSION}" numpy
fi
# The conformance tests fail (rather than skip) when the oracle is missing.
export KILN_REQUIRE_LITERT=1

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
