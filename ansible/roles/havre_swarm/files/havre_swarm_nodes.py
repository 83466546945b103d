#!/usr/bin/env python3
"""Bring swarm nodes' labels, role and availability in line with the inventory (run on a manager).

    havre_swarm_nodes.py '<json>' [--check]

The JSON maps each node id to what the inventory wants: ``{"<id>": {"host": "wrk1",
"labels": {"havre.data.cardio": "true"}, "role": "worker", "availability": "active"}}``, and
``"_prefix"`` to the managed label prefix: a label with that prefix the inventory doesn't list is
removed; other labels (set by someone else) are left alone. Prints one JSON object: ``changed``
(one line per node that changed, saying what) and ``nodes`` (each node's labels after). With
``--check`` nothing is changed and ``changed`` says what would be. Talks to the engine named by
``DOCKER_HOST`` (or the default socket) with the ``docker`` command only.
"""

from __future__ import annotations

import json
import subprocess
import sys


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"`docker {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def update_args(spec: dict, wanted: dict, prefix: str) -> list[str]:
    """The ``docker node update`` arguments that turn ``spec`` into what is ``wanted``."""
    current = spec.get("Labels") or {}
    labels = {str(k): str(v) for k, v in (wanted.get("labels") or {}).items()}
    args: list[str] = []
    for key in sorted(labels):
        if current.get(key) != labels[key]:
            args += ["--label-add", f"{key}={labels[key]}"]
    for key in sorted(current):
        if key.startswith(prefix) and key not in labels:
            args += ["--label-rm", key]
    if wanted.get("role") and spec.get("Role") != wanted["role"]:
        args += ["--role", wanted["role"]]
    if wanted.get("availability") and spec.get("Availability") != wanted["availability"]:
        args += ["--availability", wanted["availability"]]
    return args


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    plan = json.loads(argv[0])
    check = "--check" in argv[1:]
    prefix = plan.pop("_prefix", "havre.")
    if not prefix:
        sys.exit("The managed label prefix is empty: every label of every node would be managed.")
    changed, nodes = [], {}
    for node_id, wanted in sorted(plan.items()):
        spec = json.loads(docker("node", "inspect", "--format", "{{json .Spec}}", node_id))
        args = update_args(spec, wanted, prefix)
        if args:
            changed.append(f"{wanted.get('host', node_id)}: {' '.join(args)}")
            if not check:
                docker("node", "update", *args, node_id)
                spec = json.loads(docker("node", "inspect", "--format", "{{json .Spec}}", node_id))
        nodes[wanted.get("host", node_id)] = spec.get("Labels") or {}
    print(json.dumps({"changed": changed, "nodes": nodes}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
