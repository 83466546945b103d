#!/usr/bin/env bash
# Make sure a Docker Engine is installed and running on this host.
# Sourced by scripts/start-local.sh and scripts/run-tests.sh.
# Installs Debian's docker.io when no engine is present and starts dockerd in the
# background when the host has no init system that manages it (CI, containers).
set -euo pipefail

havre_docker_ready() {
  docker info >/dev/null 2>&1
}

havre_ensure_docker() {
  if havre_docker_ready; then
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "==> Installing Docker Engine from Debian (docker.io)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io iptables
  fi
  if command -v systemctl >/dev/null 2>&1 && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    systemctl start docker
  else
    echo "==> Starting dockerd in the background (log: /var/log/havre-dockerd.log)"
    nohup dockerd >/var/log/havre-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    if havre_docker_ready; then
      return 0
    fi
    sleep 1
  done
  echo "error: the Docker engine did not become ready within 60 s; see /var/log/havre-dockerd.log" >&2
  return 1
}
