#!/usr/bin/env bash
# The README's main-job command: set up (idempotent), then the end-to-end demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
"${M2F_VENV:-.venv}/bin/python" -m m2f_plugin.tools.demo "$@"
