#!/usr/bin/env bash
# Make sure a headless-capable Chromium is installed for the browser tests (tests/e2e).
# Sourced by scripts/run-tests.sh. Installs Debian's chromium (and its driver) when
# /usr/bin/chromium is missing: the tests drive it through Playwright's Python package with
# executable_path=/usr/bin/chromium, because `playwright install` downloads browsers from the
# internet, which this project does not rely on.
set -euo pipefail

HAVRE_CHROMIUM="${HAVRE_CHROMIUM:-/usr/bin/chromium}"
# axe-core, the accessibility audit the browser tests inject into every page of the story: the
# npm registry's tarball of this version, checked against its pinned SHA-512 (the registry's
# dist.integrity: `curl -s https://registry.npmjs.org/axe-core/VERSION` shows it; change both
# together). No npm is needed: scripts/fetch_npm_tarball.py fetches, checks and extracts.
HAVRE_AXE_VERSION="4.14.1"
HAVRE_AXE_INTEGRITY="sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
HAVRE_AXE_URL="${HAVRE_AXE_URL:-https://registry.npmjs.org/axe-core/-/axe-core-$HAVRE_AXE_VERSION.tgz}"
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
  local stamp="$HAVRE_AXE_DIR/node_modules/axe-core/.integrity"
  if [ -f "$js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HAVRE_AXE_INTEGRITY" ]; then
    return 0
  fi
  echo "==> Fetching axe-core $HAVRE_AXE_VERSION into $HAVRE_AXE_DIR (hash pinned in scripts/lib/browser.sh)"
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  rm -f "$stamp"
  python3 "$here/fetch_npm_tarball.py" "$HAVRE_AXE_URL" "$HAVRE_AXE_INTEGRITY" axe.min.js "$js" \
    || { echo "error: axe-core was not installed (above: why)" >&2; return 1; }
  echo "$HAVRE_AXE_INTEGRITY" >"$stamp"
}
