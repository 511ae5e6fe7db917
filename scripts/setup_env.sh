#!/usr/bin/env bash
# Create or update the local virtual environment with the pinned stack.
# Idempotent: a second run rebuilds nothing (mmcv is built only when its compiled
# ops do not import; the rest is skipped when requirements are unchanged).
#   M2F_VENV   where the venv lives (default: .venv in the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${M2F_VENV:-.venv}
PY="$VENV/bin/python"
log() { echo "[setup_env] $*"; }

if [ ! -x "$PY" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi

stamp="$VENV/.m2f_setup_stamp"
want=$(cat requirements/*.txt setup.py scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$PY" -c "import m2f_plugin" >/dev/null 2>&1; then
  log "environment up to date ($VENV)"
  exit 0
fi

pipi() { "$PY" -m pip install --disable-pip-version-check -q -c requirements/constraints.txt "$@"; }
log "base tools"
pipi -U pip 'setuptools>=77,<81' wheel ninja
log "torch (CPU build pinned) and light dependencies"
pipi torch==2.13.0 -r requirements/runtime.txt mmengine==0.10.7
if "$PY" -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  log "mmcv with compiled ops already present: $("$PY" -c 'import mmcv; print(mmcv.__version__)')"
else
  log "building mmcv 2.1.0 from source (about 15 minutes on 2 cores)"
  MAX_JOBS=${MAX_JOBS:-2} pipi --no-build-isolation mmcv==2.1.0
fi
log "mmsegmentation, mmdet, test tools, openmim"
pipi mmsegmentation==1.2.2 mmdet==3.3.0 -r requirements/tests.txt \
  'setuptools>=77,<81'
pipi --no-deps openmim==0.3.9
log "m2f_plugin (editable)"
pipi --no-build-isolation --no-deps -e .
# mim locates a package as <dist location>/<name>; a PEP 660 editable install
# puts the dist-info in site-packages, so point site-packages/m2f_plugin at the
# checkout (edits stay live) for `mim train/test m2f_plugin ...` to find .mim/.
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
ln -sfn "$(pwd)/m2f_plugin" "$site/m2f_plugin"
"$PY" -c "import m2f_plugin; print('[setup_env] m2f_plugin', m2f_plugin.__version__, 'ready')"
echo "$want" > "$stamp"
