#!/usr/bin/env bash
# Make sure the host has Python 3.11+ with venv, and the project's virtualenv in .venv.
# Sourced by scripts/start-local.sh and scripts/run-tests.sh; $1 = pip extras to install.
set -euo pipefail

havre_ensure_venv() {
  local extras="$1"
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "==> Installing Python 3 from Debian"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip
  fi
  # age: encrypted backups (ansible/roles/havre_common/files/havre_archive.py and its tests)
  if ! command -v age >/dev/null 2>&1; then
    echo "==> Installing age from Debian (encrypted backups)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q age
  fi
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  local stamp=.venv/.havre-installed
  local want
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras}"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> Installing Havre and its ${extras} dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[${extras}]"
    # As in the images (images/*/Dockerfile): rfc3987-syntax (jsonschema[format-nongpl], for
    # "iri" format checks nothing here uses) compiles a Lark grammar on every import of
    # jsonschema, 0.5 s on an idle machine and half of `import egress.operations.facade` on a
    # busy one, in every test process and every subprocess a test starts.
    .venv/bin/pip uninstall -q -y rfc3987-syntax lark
    echo "$want" >"$stamp"
  fi
}
