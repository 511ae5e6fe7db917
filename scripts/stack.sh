# Sourced by the other scripts: which toolbox stack, and its virtual environment.
#   STACK      openmmlab (default) or onedl
#   M2F_VENV   the venv (default: .venv, or .venv-onedl for STACK=onedl)
STACK=${STACK:-openmmlab}
case "$STACK" in
  openmmlab) VENV=${M2F_VENV:-.venv} ;;
  onedl) VENV=${M2F_VENV:-.venv-onedl} ;;
  *) echo "unknown STACK='$STACK': use STACK=openmmlab or STACK=onedl" >&2
     exit 2 ;;
esac
export STACK M2F_VENV="$VENV"
PY="$VENV/bin/python"
