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


#: Docker's overlay option that encrypts the VXLAN traffic between hosts (IPsec)
OVERLAY_ENCRYPTED = "encrypted"


def project_overlay_spec(
    network: str, enclave: str, project: str, *, encrypted: bool = True
) -> dict[str, Any]:
    """The project network on a Swarm cluster: an internal, attachable overlay (the hub and
    egress, plain containers on the manager, attach to it; servers are services on it),
    encrypted between hosts unless the test cluster says otherwise
    (``havre.enclave.config.cluster``)."""
    return {
        "driver": "overlay",
        "internal": True,
        "attachable": True,
        "enable_ipv6": False,
        "check_duplicate": True,
        "options": {OVERLAY_ENCRYPTED: ""} if encrypted else {},
        "labels": {"havre.enclave": enclave, "havre.project": project},
    }


def project_network_is_closed(
    network_attrs: dict[str, Any], *, overlay_encrypted: bool | None = None
) -> bool:
    """True when an existing Docker network has the properties Havre relies on.

    An overlay (cluster mode) has no host side to close; it must be internal and, when
    ``overlay_encrypted`` is true, encrypted."""
    options = network_attrs.get("Options") or {}
    if network_attrs.get("Driver") == "overlay":
        return (
            bool(network_attrs.get("Internal"))
            and bool(network_attrs.get("Attachable"))
            and not network_attrs.get("EnableIPv6")
            and (not overlay_encrypted or OVERLAY_ENCRYPTED in options)
        )
    return (
        bool(network_attrs.get("Internal"))
        and not network_attrs.get("EnableIPv6")
        and options.get(INHIBIT_IPV4) == "true"
    )
