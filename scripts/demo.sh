#!/usr/bin/env bash
# The README's main-job command: set up (idempotent), then the end-to-end demo.
# STACK=onedl runs it on the OneDL toolbox family (its own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
bash scripts/setup_env.sh
"$PY" -m m2f_plugin.tools.demo "$@"
