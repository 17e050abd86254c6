#!/usr/bin/env bash
# Build the peer-tool benchmark environment (SAELens, EleutherAI sparsify, dictionary_learning) OUTSIDE
# the repo, so their dependency pins never touch saescope's own venv. One command:
#   bash bench/setup_peers.sh [ENV_DIR]        (default /work/benchenv, or $BENCHENV)
set -euo pipefail

ENV_DIR="${1:-${BENCHENV:-/work/benchenv}}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$ENV_DIR"
PIP="$ENV_DIR/bin/python -m pip"

# torch is pinned to the CPU wheel that saescope uses; any other torch pulls GBs of CUDA.
cat > "$ENV_DIR/constraints.txt" <<'PINS'
torch==2.13.0
PINS

$PIP install --quiet --upgrade pip
$PIP install -c "$ENV_DIR/constraints.txt" torch==2.13.0
$PIP install -c "$ENV_DIR/constraints.txt" sae-lens eai-sparsify dictionary-learning

# The peers drag in a PyPI torchvision built for another torch; beside the CPU torch it breaks
# `import transformers` (torchvision::nms is missing), and none of the trainers needs it.
$PIP uninstall -y torchvision || true

"$ENV_DIR/bin/python" - <<'PY'
import importlib.metadata as md
import torch
for name in ("torch", "sae-lens", "eai-sparsify", "dictionary-learning", "transformers"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: NOT INSTALLED")
import sae_lens, sparsify, dictionary_learning  # noqa: F401  (fails loudly if any is broken)
print("torch", torch.__version__, "ok")
PY
