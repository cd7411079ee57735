#!/usr/bin/env bash
# Install, lint and run the whole test suite (what CI runs), on two worker processes (pytest-xdist).
# --dist loadfile: each test module runs whole on one worker, so a module's session fixtures (the Prefect server,
# the PostgreSQL stack, the trained store) start once. (--dist loadgroup does not group under pytest 9:
# pytest-xdist 3.8 renames items through a private attribute pytest 9 no longer reads.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n "${GALAXY_TEST_WORKERS:-2}" --dist loadfile "$@"
