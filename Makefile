# The two README commands. Both set up the stack's venv first (idempotent).
# STACK=openmmlab (default, .venv) or STACK=onedl (.venv-onedl), e.g.
#   make test STACK=onedl
.PHONY: setup demo test lint
setup:
	bash scripts/setup_env.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint: setup
	bash -c 'source scripts/stack.sh && "$$PY" -m ruff check m2f_plugin tests tools configs projects_ops'
