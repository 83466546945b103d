#!/usr/bin/env bash
# The fast tier: lint, format, the import contracts, the generated docs and the unit tests.
# No root, no Docker, no image build; under a minute on an idle 2-core machine.
# For your own loop while you work; scripts/run-tests.sh runs it first, then everything else.
# The unit tests run on every core (pytest-xdist) with the "fast" Hypothesis profile (each
# property on a fifth of its examples, tests/hypothesis_budget.py), without the tests marked
# slow and the PostgreSQL copies; the full run has all of them, at the full counts.
# Extra arguments go to pytest (e.g. -x, -k sdc; -n 0 for one process, to use -s or --pdb).
# HAVRE_CHECK_UNIT=0: everything but the unit tests (scripts/run-tests.sh runs them in full).
set -euo pipefail
cd "$(dirname "$0")/.."
# Compiled bytecode (and pytest's assertion-rewritten tests) cached outside the work tree, so
# a second run neither recompiles every module nor leaves __pycache__ folders in the tree.
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/havre/pycache}"
unset PYTHONDONTWRITEBYTECODE
if [ ! -x .venv/bin/python ]; then
  source scripts/lib/python-env.sh
  havre_ensure_venv dev
fi
echo "==> Lint and format"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> Import contracts (the layers of docs/architecture.md, in pyproject.toml)"
.venv/bin/lint-imports
echo "==> Generated docs"
if ! .venv/bin/python -m egress.domain.workflow | diff -u docs/egress/request-states.md -; then
  echo "error: docs/egress/request-states.md is out of date:" \
    "python -m egress.domain.workflow > docs/egress/request-states.md" >&2
  exit 1
fi
if [ "${HAVRE_CHECK_UNIT:-1}" = 0 ]; then
  echo "==> Unit tests: not here (HAVRE_CHECK_UNIT=0)"
  exit 0
fi
echo "==> Unit tests (fast profile; run-tests.sh runs the slow ones, the PostgreSQL copies, full counts)"
parallel=(-n auto)
if ! .venv/bin/python -c "import xdist" 2>/dev/null; then
  echo "note: pytest-xdist is missing from .venv (pip install -e '.[dev]'): one process" >&2
  parallel=()
fi
set +e
.venv/bin/python -m pytest tests/unit -q -m "not slow" -k "not postgresql" \
  --hypothesis-profile=fast "${parallel[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
