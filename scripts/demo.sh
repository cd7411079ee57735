#!/usr/bin/env bash
# The main job on a fresh machine: install, start the local stack, run the `galaxy/full` deployment on the
# offline synthetic default through the Prefect server and worker, and say where to look.
# Extra arguments go to `prefect deployment run`, e.g.  bash scripts/demo.sh --param 'config={"synthetic_n": 1000}'
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/stack.sh up
export PATH=$PWD/.venv/bin:$PATH PREFECT_API_URL=http://127.0.0.1:${PREFECT_PORT:-4200}/api
start=$(date +%s)
prefect deployment run galaxy/full --watch --watch-interval 10 "$@"
echo
echo "galaxy/full finished in $(( $(date +%s) - start )) s."
echo "  MLflow UI:  http://127.0.0.1:${MLFLOW_PORT:-5000}   (experiments galaxy-vqvae, galaxy-atlas, galaxy-prior, galaxy-judge, galaxy-evaluate)"
echo "  Prefect UI: http://127.0.0.1:${PREFECT_PORT:-4200}   (flow run artifacts: galaxy-summary)"
echo "  Models:     models:/galaxy-vqvae@champion  models:/galaxy-sampler@champion  models:/galaxy-judge@champion"
echo "  Try:        .venv/bin/galaxy sample --classes 5,6,7 --n 8 --cfg 3 --out grid.png"
echo "  Stop:       bash scripts/stack.sh down"
