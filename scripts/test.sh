#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the test suite.
# STACK=onedl runs it on the OneDL toolbox family (its own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
bash scripts/setup_env.sh
"$PY" -m ruff check m2f_plugin tests tools configs projects_ops
# pytest exits 5 when nothing was collected: that is a failure too.
# Tests marked heavy (whole-model torch.compile, minutes each) run with
# `make test-heavy`; everything else runs here.
"$PY" -m pytest -q -m "${PYTEST_MARKS:-not heavy}" "$@" tests
