#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=${M2F_VENV:-.venv}/bin/python
"$PY" -m ruff check m2f_plugin tests tools configs projects_ops
# pytest exits 5 when nothing was collected: that is a failure too.
"$PY" -m pytest -q "$@" tests
