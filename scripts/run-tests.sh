#!/usr/bin/env bash
# Set up everything the test suite needs on this host and run it.
# Fresh Debian 12, as root: the Python venv with the test dependencies, then the fast tier
# (scripts/check.sh: lint, import contracts, generated docs, unit tests), then Docker Engine,
# Chromium, PostgreSQL, Prometheus, the images, ansible-lint and the whole pytest suite (unit,
# with the slow tests, the PostgreSQL copies and the full Hypothesis counts; integration; e2e;
# ansible).
# Extra arguments go to pytest. Exits non-zero when pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (the tests drive Docker and host networking)" >&2; exit 1; }
source scripts/lib/docker-engine.sh
source scripts/lib/python-env.sh
source scripts/lib/browser.sh

havre_ensure_venv dev
echo "==> The fast tier (scripts/check.sh)"
bash scripts/check.sh

havre_ensure_docker
havre_ensure_browser
havre_ensure_axe
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
# Prometheus: tests/integration/test_metrics_prometheus.py starts its own server on loopback;
# the package's own service (on systemd machines) is switched off, nothing else is installed.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "==> Installing prometheus from Debian (for the metrics test; its service stays off)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus || true; fi
fi
PYTHON=.venv/bin/python bash images/build.sh  # the venv has pip (Debian's python3 may not)

echo "==> Lint the playbooks"
(cd ansible && ../.venv/bin/ansible-lint --profile production)

echo "==> Tests"
# coverage data outside the work tree (a test run leaves the repository as it found it)
export COVERAGE_FILE="${COVERAGE_FILE:-${TMPDIR:-/tmp}/havre-coverage-$$/.coverage}"
mkdir -p "$(dirname "$COVERAGE_FILE")"
set +e
# --durations: every log shows where the time goes (the 40 slowest setups, calls, teardowns)
.venv/bin/python -m pytest -ra --durations=40 --cov --cov-report= --hypothesis-profile=full "$@"
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
