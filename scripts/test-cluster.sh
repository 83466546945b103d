#!/usr/bin/env bash
# A test cluster of Docker engines on this machine, for a human to look at or to run Havre on:
#   bash scripts/test-cluster.sh up [NAME] [--nodes N] [--image IMAGE ...]
#   bash scripts/test-cluster.sh down [NAME]
# Each engine runs in a network namespace of its own on a test bridge (tests/cluster/engines.py);
# `up` prints each engine's DOCKER_HOST; `down` removes everything and says what was left behind.
# As root. NAME defaults to hvc.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" -m tests.cluster.engines "$@"
