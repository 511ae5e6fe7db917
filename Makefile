# The two README commands. Both set up the stack's venv first (idempotent).
# STACK=openmmlab (default, .venv) or STACK=onedl (.venv-onedl), e.g.
#   make test STACK=onedl
.PHONY: setup demo test test-heavy lint mutants
setup:
	bash scripts/setup_env.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
# the tests left out of `make test` (whole-model torch.compile, ~5 min on 2 cores)
test-heavy:
	PYTEST_MARKS=heavy bash scripts/test.sh
lint: setup
	bash -c 'source scripts/stack.sh && "$$PY" -m ruff check m2f_plugin tests tools configs projects_ops'
# Mutation testing (not part of `make test`, not in CI): 40 sampled mutants of
# heads, matcher, structures and engine against their fast tests, ~15 min on 2
# cores; report in work_dirs/mutants.json. Same SEED, same mutants while the
# modules are unchanged (else --replay, docs/testing.md).
SEED ?= 1
SAMPLE ?= 40
mutants: setup
	bash -c 'source scripts/stack.sh && "$$PY" tools/mutants.py --sample $(SAMPLE) --seed $(SEED) --json work_dirs/mutants.json'
