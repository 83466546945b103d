#!/usr/bin/env bash
# Make sure a headless-capable Chromium is installed for the browser tests (tests/e2e).
# Sourced by scripts/run-tests.sh. Installs Debian's chromium (and its driver) when
# /usr/bin/chromium is missing: the tests drive it through Playwright's Python package with
# executable_path=/usr/bin/chromium, because `playwright install` downloads browsers from the
# internet, which this project does not rely on.
set -euo pipefail

HAVRE_CHROMIUM="${HAVRE_CHROMIUM:-/usr/bin/chromium}"
# axe-core, the accessibility audit the browser tests inject into every page of the story
HAVRE_AXE_VERSION="4.14.1"
HAVRE_AXE_DIR="${HAVRE_AXE_DIR:-/opt/havre-axe}"

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

havre_ensure_axe() {
  local js="$HAVRE_AXE_DIR/node_modules/axe-core/axe.min.js"
  if [ -f "$js" ] && grep -q "axe v$HAVRE_AXE_VERSION" "$js"; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> Installing npm from Debian (for axe-core)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
  fi
  echo "==> Installing axe-core $HAVRE_AXE_VERSION into $HAVRE_AXE_DIR"
  mkdir -p "$HAVRE_AXE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$HAVRE_AXE_DIR" "axe-core@$HAVRE_AXE_VERSION"
  [ -f "$js" ] || { echo "error: $js is missing after npm install" >&2; return 1; }
}
