#!/usr/bin/env bash
# The fast tier: lint, format, the import contracts and the unit tests.
# No root, no Docker, no image build.
# For your own loop while you work; scripts/run-tests.sh runs it first, then everything else.
# Extra arguments go to pytest (e.g. -x, -k sdc).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  source scripts/lib/python-env.sh
  havre_ensure_venv dev
fi
echo "==> Lint and format"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> Import contracts (the layers of docs/architecture.md, in pyproject.toml)"
.venv/bin/lint-imports
echo "==> Unit tests (without the slow races and the PostgreSQL copies; run-tests.sh runs all)"
set +e
.venv/bin/python -m pytest tests/unit -q -m "not slow" -k "not postgresql" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
