# The two README commands. Both set up .venv first (idempotent).
.PHONY: setup demo test lint
setup:
	bash scripts/setup_env.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint: setup
	.venv/bin/python -m ruff check m2f_plugin tests tools configs projects_ops
