#!/usr/bin/env bash
# GPU readiness, within 8 minutes on a CUDA machine: the CUDA paths of benchmarks/train_vqvae.py and
# benchmarks/sampler.py (batch 256), and a one-epoch galaxy/article smoke run on a 17,736-image synthetic file;
# one line per figure, each naming the device (scripts/gpu_check.py).
#   bash scripts/gpu-check.sh             run it; without CUDA: one line, exit 1
#   bash scripts/gpu-check.sh --dry-run   no GPU needed: check that every step can start, print the plan
# GALAXY_GPU_CHECK_LIMIT_S changes the 480 s limit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LIMIT=${GALAXY_GPU_CHECK_LIMIT_S:-480}
status=0
timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" scripts/gpu_check.py "$@" || status=$?
if [ "$status" = 124 ] || [ "$status" = 130 ]; then
  echo "gpu-check: stopped after the $LIMIT s limit; the figures above are the steps that finished" >&2
fi
exit "$status"
