"""The small enclave the broker's and the spawner's unit tests build on, and what the engine
would report of a container the broker's policy made (tests/unit/test_broker_policy.py,
test_broker_desktop.py, test_project_spawner.py).

No Docker: :func:`unit_config` is a plain config mapping for ``parse_enclave_config``, and
:func:`inspect_of` plays ``docker inspect`` for the containers' checker
(``havre.broker.policy.container_problems``).
"""

from __future__ import annotations

import copy
from typing import Any

from havre.broker.policy import ContainerSpec

NOTEBOOK_IMAGE = "havre/notebook:0.1.0"


def unit_config(
    *, images: dict[str, Any] | None = None, projects: dict[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """A new config of the enclave ``unit`` (state in ``/srv/unit``): the notebook image
    allowed, limits of 1.5 CPUs, 1G and 300 processes, the project ``cardio`` (alice, carol).

    ``images`` and ``projects`` are added to those sections, ``more`` as sections of their own
    (``output_checkers=[...]``). Each call returns a deep copy: a test may change it freely.
    """
    config = {
        "enclave": {"name": "unit", "state_dir": "/srv/unit"},
        "images": {"allowed": [NOTEBOOK_IMAGE], **(images or {})},
        "limits": {"cpu": 1.5, "memory": "1G", "pids": 300},
        "projects": {
            "cardio": {"title": "Cardio", "members": ["alice", "carol"]},
            **(projects or {}),
        },
        **more,
    }
    return copy.deepcopy(config)


def inspect_of(spec: ContainerSpec, network_mode: str | None = None) -> dict[str, Any]:
    """A ``docker inspect`` of a container made from ``spec`` (what the engine reports);
    ``network_mode`` as the engine reports it when that differs from the spec's (a namespace
    owner by id)."""
    host = spec.host_config
    return {
        "Name": "/" + spec.name,
        "Config": {
            "Image": spec.image,
            "User": spec.user,
            "Labels": dict(spec.labels),
            "Env": [f"{key}={value}" for key, value in spec.environment.items()],
        },
        "HostConfig": {
            "CapDrop": host["cap_drop"],
            "CapAdd": None,
            "Privileged": False,
            "SecurityOpt": host["security_opt"],
            "ReadonlyRootfs": True,
            "NetworkMode": network_mode or host["network_mode"],
        },
        "Mounts": [
            {"Type": "bind", "Source": m.source, "Destination": m.target, "RW": not m.read_only}
            for m in spec.mounts
        ],
    }
