#!/usr/bin/env bash
# Build circuit-tracer's environment OUTSIDE the repo (it pins transformers and TransformerLens versions of its own),
# for tests/core/test_circuit_tracer_roundtrip.py. One command:
#   bash bench/setup_circuit_tracer.sh [ENV_DIR]        (default /work/ctenv, or $CTENV)
set -euo pipefail
source "$(dirname "$0")/peer_venv.sh"

ENV_DIR="${1:-${CTENV:-/work/ctenv}}"
peer_venv "$ENV_DIR" circuit-tracer transformer-lens
"$ENV_DIR/bin/python" -c 'import circuit_tracer.utils.hf_utils, circuit_tracer.replacement_model, torch; print("torch", torch.__version__, "ok")'
