#!/usr/bin/env bash
# Build circuit-tracer's environment OUTSIDE the repo (it pins transformers and TransformerLens versions of its own),
# for tests/core/test_circuit_tracer_roundtrip.py. One command:
#   bash bench/setup_circuit_tracer.sh [ENV_DIR]        (default /work/ctenv, or $CTENV)
set -euo pipefail

ENV_DIR="${1:-${CTENV:-/work/ctenv}}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$ENV_DIR"
PIP="$ENV_DIR/bin/python -m pip"

# torch is pinned to the CPU wheel that saescope uses; any other torch pulls GBs of CUDA.
cat > "$ENV_DIR/constraints.txt" <<'PINS'
torch==2.13.0
PINS

$PIP install --quiet --upgrade pip
$PIP install -c "$ENV_DIR/constraints.txt" torch==2.13.0
$PIP install -c "$ENV_DIR/constraints.txt" circuit-tracer

# TransformerLens drags in a PyPI torchvision built for another torch; none of circuit-tracer's loading needs it.
$PIP uninstall -y torchvision || true

"$ENV_DIR/bin/python" - <<'PY'
import importlib.metadata as md
import torch
for name in ("torch", "circuit-tracer", "transformer-lens", "transformers"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: NOT INSTALLED")
import circuit_tracer.utils.hf_utils, circuit_tracer.replacement_model  # noqa: F401,E401  (fails loudly if broken)
print("torch", torch.__version__, "ok")
PY
