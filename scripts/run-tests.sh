#!/usr/bin/env bash
# Set up everything the test suite needs on this host and run it.
# Fresh Debian 12, as root: Docker Engine, Python venv with test dependencies, the images;
# then lint and the whole pytest suite (unit + integration against the real Docker engine).
# Extra arguments go to pytest. Exits non-zero when pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (the tests drive Docker and host networking)" >&2; exit 1; }
source scripts/lib/docker-engine.sh
source scripts/lib/python-env.sh
source scripts/lib/browser.sh

havre_ensure_docker
havre_ensure_venv dev
havre_ensure_browser
# host tools the tests drive: ip (canary addresses), PostgreSQL (the egress store's tests)
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> Installing ${missing[*]} from Debian"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
PYTHON=.venv/bin/python bash images/build.sh  # the venv has pip (Debian's python3 may not)

echo "==> Lint"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # the layers of docs/architecture.md ("Packages")
(cd ansible && ../.venv/bin/ansible-lint --profile production)

echo "==> Tests"
# coverage data outside the work tree (a test run leaves the repository as it found it)
export COVERAGE_FILE="${COVERAGE_FILE:-${TMPDIR:-/tmp}/havre-coverage-$$/.coverage}"
mkdir -p "$(dirname "$COVERAGE_FILE")"
set +e
.venv/bin/python -m pytest -ra --cov --cov-report= "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
echo "==> Coverage (floors in scripts/coverage_report.py)"
if ! .venv/bin/python scripts/coverage_report.py && [ "$status" -eq 0 ]; then
  status=1
fi
exit "$status"
