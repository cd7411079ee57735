#!/usr/bin/env bash
# Install, lint and run the whole test suite (what CI runs), on two worker processes (pytest-xdist).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n "${GALAXY_TEST_WORKERS:-2}" --dist loadgroup "$@"
