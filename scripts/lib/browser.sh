#!/usr/bin/env bash
# Make sure a headless-capable Chromium is installed for the browser tests (tests/e2e).
# Sourced by scripts/run-tests.sh. Installs Debian's chromium (and its driver) when
# /usr/bin/chromium is missing: the tests drive it through Playwright's Python package with
# executable_path=/usr/bin/chromium, because `playwright install` downloads browsers from the
# internet, which this project does not rely on.
set -euo pipefail

HAVRE_CHROMIUM="${HAVRE_CHROMIUM:-/usr/bin/chromium}"

havre_browser_ready() {
  [ -x "$HAVRE_CHROMIUM" ] && "$HAVRE_CHROMIUM" --version >/dev/null 2>&1
}

havre_ensure_browser() {
  if havre_browser_ready; then
    return 0
  fi
  echo "==> Installing Chromium from Debian (chromium, chromium-driver)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  if ! havre_browser_ready; then
    echo "error: $HAVRE_CHROMIUM is still missing or does not run after installing chromium" >&2
    return 1
  fi
}
