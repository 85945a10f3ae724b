#!/usr/bin/env bash
# Runs every test of the workspace, including the LiteRT conformance tests.
# Creates .venv with the official LiteRT interpreter (ai-edge-litert), numpy and TensorBoard
# from PyPI when it is missing: LiteRT is the oracle the tests compare kiln-runtime with, and
# TensorBoard's own reader checks the run directory's event files.
set -euo pipefail
cd "$(dirname "$0")/.."

LITERT_VERSION=2.3.0
TENSORBOARD_VERSION=2.21.0
if ! .venv/bin/python -c "import ai_edge_litert.interpreter, numpy, tensorboard" >/dev/null 2>&1; then
  echo "creating .venv with ai-edge-litert==${LITERT_VERSION}, numpy and tensorboard==${TENSORBOARD_VERSION}" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "ai-edge-litert==${LITERT_VERSION}" numpy "tensorboard==${TENSORBOARD_VERSION}"
fi
# The conformance tests fail (rather than skip) when the oracle (or TensorBoard) is missing.
export KILN_REQUIRE_LITERT=1

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
