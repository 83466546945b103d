#!/usr/bin/env bash
# Set up everything on this host and run a local demo enclave.
# Fresh Debian 12, as root: installs Docker Engine and Python if missing, builds the images,
# writes the demo enclave (two projects, five users, synthetic data) and starts it.
# Running it again is harmless: it keeps the existing config, data, passwords and homes.
#   HAVRE_STATE_DIR (default /var/lib/havre), HAVRE_BIND (127.0.0.1), HAVRE_PORT (8000),
#   HAVRE_IDP_PORT (8001, the sign-in page), HAVRE_PUBLIC_HOST (default: HAVRE_BIND)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "error: run as root (it manages Docker and host folders)" >&2; exit 1; }
source scripts/lib/docker-engine.sh
source scripts/lib/python-env.sh

havre_ensure_docker
havre_ensure_venv cli
PYTHON=.venv/bin/python bash images/build.sh  # the venv has pip (Debian's python3 may not)
state="${HAVRE_STATE_DIR:-/var/lib/havre}"
.venv/bin/havre demo-init --state-dir "$state"
exec .venv/bin/havre up --config "$state/enclave.yaml" \
  --bind "${HAVRE_BIND:-127.0.0.1}" --port "${HAVRE_PORT:-8000}" \
  --idp-port "${HAVRE_IDP_PORT:-8001}" --public-host "${HAVRE_PUBLIC_HOST:-}"
