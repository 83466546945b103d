#!/usr/bin/env bash
# Set up everything the test suite needs on this host and run it.
# Fresh Debian 12, as root: the Python venv with the test dependencies, then the fast tier's
# checks (scripts/check.sh: lint, import contracts, generated docs; its unit tests are not run
# twice: they are part of the next step), then PostgreSQL and the unit tests once, in full (the
# PostgreSQL copies and the full Hypothesis counts) on every core, and the slow ones (races,
# crashes) in one process; then Docker
# Engine, Chromium, Prometheus, the images, ansible-lint and the rest of the suite
# (integration, e2e, ansible, cluster) in one process (one enclave). Every run under coverage.
# Extra arguments go to pytest, and then everything runs as one pytest run, in one process, as
# given. Exits non-zero when pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (the tests drive Docker and host networking)" >&2; exit 1; }
source scripts/lib/docker-engine.sh
source scripts/lib/python-env.sh
source scripts/lib/browser.sh

havre_ensure_venv dev
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

# coverage data outside the work tree (a test run leaves the repository as it found it)
export COVERAGE_FILE="${COVERAGE_FILE:-${TMPDIR:-/tmp}/havre-coverage-$$/.coverage}"
mkdir -p "$(dirname "$COVERAGE_FILE")"
# --durations: every log shows where the time goes (the 40 slowest setups, calls, teardowns)
pytest_run=(.venv/bin/python -m pytest -ra --durations=40 --cov --cov-report= --hypothesis-profile=full)
status=0
# pytest_step ARGS...: one pytest run; its status joins $status (5, nothing collected, is an error)
pytest_step() {
  local rc=0
  "${pytest_run[@]}" "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    rc=1
  fi
  [ "$rc" -eq 0 ] || status=$rc
}

if [ "$#" -eq 0 ]; then
  echo "==> The fast tier's checks (scripts/check.sh; its unit tests run once, in full, below)"
  HAVRE_CHECK_UNIT=0 bash scripts/check.sh
  # Every unit test once, at the full counts: before the long setup below, so a failure shows
  # early (the run goes on either way and fails at the end). On every core (pytest-xdist), but
  # the tests marked slow (races, crashes, timing) in one process, as they were written for.
  echo "==> Unit tests (full Hypothesis counts, PostgreSQL copies; every core)"
  pytest_step tests/unit -n auto -m "not slow"
  echo "==> Unit tests marked slow (one process)"
  pytest_step --cov-append tests/unit -m slow
else
  echo "==> The fast tier (scripts/check.sh)"
  bash scripts/check.sh
fi

havre_ensure_docker
havre_ensure_browser
havre_ensure_axe
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

if [ "$#" -eq 0 ]; then
  echo "==> Tests (integration, e2e, ansible, cluster: one process, one enclave)"
  pytest_step --cov-append --ignore=tests/unit
else
  echo "==> Tests"
  pytest_step "$@"
fi
echo "==> Coverage (floors in scripts/coverage_report.py)"
if ! .venv/bin/python scripts/coverage_report.py && [ "$status" -eq 0 ]; then
  status=1
fi
exit "$status"
