"""What every project network is: one definition for the spawner and ``havre up``.

A project's network is an internal Docker bridge (no route out) whose host side has no address
(``inhibit_ipv4``: services listening on the host's wildcard address can't be reached through
the network's gateway), and whose host interface is named ``hvp`` + 12 hex digits, so that the
host firewall (``ansible/roles/havre_firewall``) can match every project network by name.
No Docker or JupyterHub import here: the host-side command line uses it too.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Docker's driver option that leaves the bridge without a host address
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
#: Docker's driver option naming the bridge's host interface
BRIDGE_NAME = "com.docker.network.bridge.name"
#: host interface names of project networks start with this (the firewall's ``-i hvp+``)
PROJECT_BRIDGE_PREFIX = "hvp"


def project_bridge_name(network: str) -> str:
    """The host interface of a project network's bridge: ``hvp`` + 12 hex digits (Linux allows
    15 characters)."""
    return PROJECT_BRIDGE_PREFIX + hashlib.sha256(network.encode()).hexdigest()[:12]


def project_network_options(network: str) -> dict[str, str]:
    """Docker driver options of the project network called ``network``."""
    return {INHIBIT_IPV4: "true", BRIDGE_NAME: project_bridge_name(network)}


def project_network_spec(network: str, enclave: str, project: str) -> dict[str, Any]:
    """Everything Docker is given to create the project network called ``network`` (the
    spawn broker and ``havre up`` both create it from this, so they can't drift apart)."""
    return {
        "driver": "bridge",
        "internal": True,
        "enable_ipv6": False,
        "check_duplicate": True,
        "options": project_network_options(network),
        "labels": {"havre.enclave": enclave, "havre.project": project},
    }


def project_network_is_closed(network_attrs: dict[str, Any]) -> bool:
    """True when an existing Docker network has the properties Havre relies on."""
    options = network_attrs.get("Options") or {}
    return (
        bool(network_attrs.get("Internal"))
        and not network_attrs.get("EnableIPv6")
        and options.get(INHIBIT_IPV4) == "true"
    )
