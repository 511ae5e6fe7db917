#!/usr/bin/env bash
# Create or update a virtual environment with one pinned toolbox stack.
# Idempotent: a second run rebuilds nothing (mmcv is built only when its compiled
# ops do not import; the rest is skipped when requirements are unchanged).
#   STACK      openmmlab (default: mmcv 2.1, mmseg 1.2.2, mmdet 3.3, numpy 1)
#              or onedl (the maintained forks: onedl-mmcv 2.3, numpy 2)
#   M2F_VENV   where the venv lives (default: .venv, or .venv-onedl for onedl)
# The exact versions: requirements/stacks/<STACK>.txt and <STACK>-constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
PINS="requirements/stacks/$STACK.txt"
CONSTRAINTS="requirements/stacks/$STACK-constraints.txt"
log() { echo "[setup_env] $*"; }
pin() { grep -E "^$1==" "$PINS"; }  # e.g. pin mmcv -> mmcv==2.1.0

if [ ! -x "$PY" ]; then
  log "creating virtual environment $VENV ($STACK stack)"
  python3 -m venv "$VENV"
fi

stamp="$VENV/.m2f_setup_stamp"
want=$(cat requirements/*.txt requirements/stacks/*.txt setup.py \
  scripts/setup_env.sh scripts/stack.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$PY" -c "import m2f_plugin" >/dev/null 2>&1; then
  log "environment up to date ($VENV, $STACK stack)"
  exit 0
fi

prefix=""; [ "$STACK" = onedl ] && prefix="onedl-"
mmcv_pin=$(pin "${prefix}mmcv")
pipi() { "$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS" "$@"; }
log "base tools"
pipi -U pip 'setuptools>=77,<81' wheel ninja
log "torch (CPU build pinned) and light dependencies"
pipi torch==2.13.0 -r requirements/runtime.txt "$(pin "${prefix}mmengine")"
# the compiled ops must import and come from this stack's distribution
if "$PY" - "${mmcv_pin%%==*}" "${mmcv_pin##*==}" >/dev/null 2>&1 <<'PYEOF'
import sys
from importlib.metadata import version
import mmcv.ops  # noqa: F401  (fails without compiled ops)
assert version(sys.argv[1]) == sys.argv[2]
PYEOF
then
  log "$mmcv_pin with compiled ops already present"
else
  log "building $mmcv_pin from source (about 15 minutes on 2 cores)"
  MAX_JOBS=${MAX_JOBS:-2} pipi --no-build-isolation "$mmcv_pin"
fi
log "segmentation and detection toolboxes, test tools, openmim"
pipi "$(pin "${prefix}mmsegmentation")" "$(pin "${prefix}mmdet(ection)?")" \
  -r requirements/tests.txt 'setuptools>=77,<81'
pipi --no-deps openmim==0.3.9 -r requirements/panoptic.txt
log "m2f_plugin (editable)"
pipi --no-build-isolation -e .
# mim locates a package as <dist location>/<name>; a PEP 660 editable install
# puts the dist-info in site-packages, so point site-packages/m2f_plugin at the
# checkout (edits stay live) for `mim train/test m2f_plugin ...` to find .mim/.
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
ln -sfn "$(pwd)/m2f_plugin" "$site/m2f_plugin"
# a wheel installs the start-up .pth itself (setup.py); an editable install
# does not, so link it (mmseg::/mmdet:: configs then load under either family
# before m2f_plugin is imported)
ln -sfn "$(pwd)/m2f_plugin-config-names.pth" "$site/m2f_plugin-config-names.pth"
"$PY" -c "import m2f_plugin; print('[setup_env] m2f_plugin', m2f_plugin.__version__, 'ready')"
echo "$want" > "$stamp"
