#!/usr/bin/env bash
# Build the peer-tool benchmark environment (SAELens, EleutherAI sparsify, dictionary_learning) OUTSIDE
# the repo, so their dependency pins never touch saescope's own venv. One command:
#   bash bench/setup_peers.sh [ENV_DIR]        (default /work/benchenv, or $BENCHENV)
set -euo pipefail
source "$(dirname "$0")/peer_venv.sh"

ENV_DIR="${1:-${BENCHENV:-/work/benchenv}}"
peer_venv "$ENV_DIR" sae-lens eai-sparsify dictionary-learning
"$ENV_DIR/bin/python" -c 'import sae_lens, sparsify, dictionary_learning, torch; print("torch", torch.__version__, "ok")'
