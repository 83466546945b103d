#!/usr/bin/env python3
"""Check, before a playbook changes or stops anything, that it targets the right enclave and
that the ports it will publish are free. Standard library only (the host's python3); reads,
never writes.

    havre_preflight.py --name NAME --state DIR [--bind IP --port P [--idp-port Q]]

1. Identity. ``<state>/havre-enclave-id`` (written at the first deploy) names the enclave the
   state folder belongs to: another name is refused. Containers labelled
   ``havre.enclave=NAME`` that mount nothing from this state folder belong to another enclave
   of the same name (a second inventory, a forgotten ``-i``): refused, naming its folder.
2. Ports. Each port is either already published by this enclave's own containers, or free
   (no other container publishes it, and it can be bound): else refused, naming the holder.

Exit status: 0 ok (one JSON line on stdout); 1 refused (one sentence on stderr); 2 usage.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys

MARKER = "havre-enclave-id"
DOCKER_SOCKET = "/var/run/docker.sock"


class Refused(Exception):
    """What the operator is told; nothing was changed."""


def _docker(*args: str) -> str:
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return ""  # no Docker yet (a fresh host): no container can be in the way
    return done.stdout if done.returncode == 0 else ""


def containers(name: str) -> list[dict]:
    """``docker inspect`` of every container labelled as this enclave's (running or not)."""
    ids = _docker("ps", "--all", "--quiet", "--filter", f"label=havre.enclave={name}").split()
    return json.loads(_docker("inspect", *ids) or "[]") if ids else []


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _state_of(container: dict) -> str:
    """The state folder a container of some enclave works from (best guess, for the message)."""
    sources = [
        m.get("Source", "")
        for m in container.get("Mounts") or []
        if m.get("Type") == "bind" and m.get("Source") != DOCKER_SOCKET
    ]
    same = [
        m.get("Source", "")
        for m in container.get("Mounts") or []
        if m.get("Source") == m.get("Destination") and m.get("Source") != DOCKER_SOCKET
    ]
    return (sorted(same, key=len) or sorted(sources, key=len) or ["(unknown)"])[0]


def check_identity(name: str, state: str, found: list[dict]) -> list[dict]:
    """This enclave's own containers; refuse a state folder or containers of another one."""
    marker = os.path.join(state, MARKER)
    if os.path.exists(marker):
        try:
            with open(marker) as f:
                owner = json.load(f).get("name")
        except (OSError, ValueError) as err:
            raise Refused(
                f"the identity marker {marker} is unreadable ({err}); fix or remove it"
            ) from None
        if owner != name:
            raise Refused(
                f"the state folder {state} belongs to the enclave '{owner}' (its marker {marker} "
                f"says so), not to '{name}': refusing to deploy '{name}' over it. Nothing was "
                "changed. Use the inventory of that enclave, or another havre_state_dir"
            )
    real = os.path.realpath(state)
    ours, foreign = [], []
    for container in found:
        sources = [
            m.get("Source", "")
            for m in container.get("Mounts") or []
            if m.get("Type") == "bind" and m.get("Source") != DOCKER_SOCKET
        ]
        if any(_inside(s, state) or _inside(s, real) for s in sources):
            ours.append(container)
        else:
            foreign.append(container)
    if foreign:
        names = ", ".join(sorted(c.get("Name", "?").lstrip("/") for c in foreign))
        theirs = _state_of(foreign[0])
        raise Refused(
            f"another enclave named '{name}' already runs on this host from {theirs} "
            f"(containers {names}), and this inventory's state folder is {state}: refusing to "
            "take it over. Nothing was changed. Give this enclave another havre_enclave_name, "
            "or set havre_state_dir to that enclave's folder if it is the same enclave"
        )
    return ours


def _published(found: list[dict]) -> set[int]:
    ports = set()
    for container in found:
        bindings = (container.get("HostConfig") or {}).get("PortBindings") or {}
        for entries in bindings.values():
            for entry in entries or []:
                if str(entry.get("HostPort", "")).isdigit():
                    ports.add(int(entry["HostPort"]))
    return ports


def _holder(bind: str, port: int) -> str:
    """The name of a running container publishing this host port where it clashes, or ""."""
    anywhere = ("", "0.0.0.0", "::", "[::]")
    for line in _docker("ps", "--format", "{{.Names}}\t{{.Ports}}").splitlines():
        container, _, ports = line.partition("\t")
        for part in ports.split(","):
            if "->" not in part:
                continue
            address, _, host_port = part.strip().split("->")[0].rpartition(":")
            if host_port == str(port) and (
                address in anywhere or bind in anywhere or address.strip("[]") == bind
            ):
                return container
    return ""


def check_ports(bind: str, wanted: dict[str, int], ours: list[dict]) -> None:
    if len(set(wanted.values())) != len(wanted):
        raise Refused(f"{' and '.join(wanted)} are the same port ({wanted}): give each its own")
    mine = _published(ours)
    for variable, port in wanted.items():
        if port in mine:
            continue  # this enclave already serves there: it stays as it is
        holder = _holder(bind, port)
        if holder:
            raise Refused(
                f"port {port} ({variable}) is already published by the container {holder}: "
                "refusing before anything is stopped, so the enclave keeps running as it is. "
                f"Choose another {variable} or free the port"
            )
        address = "0.0.0.0" if bind in ("", "0.0.0.0") else bind
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise Refused(
                    f"port {port} on {address} ({variable}) is already in use by another "
                    "program on this host: refusing before anything is stopped, so the enclave "
                    f"keeps running as it is. Free the port or choose another {variable}"
                ) from None
            raise Refused(
                f"{address}:{port} ({variable}) can't be used on this host ({err.strerror}): "
                "check havre_bind_address"
            ) from None
        finally:
            probe.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="havre_preflight.py", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--idp-port", type=int)
    args = parser.parse_args(argv)
    try:
        ours = check_identity(args.name, args.state, containers(args.name))
        wanted = {"havre_port": args.port, "havre_idp_port": args.idp_port}
        wanted = {k: v for k, v in wanted.items() if v}
        if wanted:
            check_ports(args.bind, wanted, ours)
    except Refused as err:
        print(f"Refused: {err}.", file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, "own_containers": len(ours)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
