#!/usr/bin/env bash
# Create .venv (if needed) and install the project with the pinned constraints, the test tools and the PostgreSQL
# drivers the scale-out tests use ([dev,scale]). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,scale]"
