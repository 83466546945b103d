"""Havre's own seccomp profile for notebook and re-execution containers.

``notebook.json`` (package data, versioned here) is an allow-list in Docker's profile format:
every system call not listed gets EPERM. It allows what Docker's default profile allows an
unprivileged container, minus io_uring, ptrace and other cross-process memory access,
userfaultfd, perf_event_open, bpf and the kernel keyrings; ``socket()`` is allowed only for
AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with NETLINK_ROUTE (``getifaddrs()``, which ZeroMQ
and so every Jupyter kernel needs: without it a kernel aborts at start), so no AF_PACKET,
AF_VSOCK or other netlink protocol; ``clone`` can't make namespaces. See
docs/architecture.md ("System calls") for what was tested.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

#: System calls the profile refuses that Docker's default profile (20.10+) may allow, or that
#: are refused by name so the profile documents them (each is tested from inside a notebook).
BLOCKED = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "userfaultfd",
    "perf_event_open",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
)
#: The only address families ``socket()`` may create (any protocol).
SOCKET_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6"}
#: AF_NETLINK (16), with this protocol only: NETLINK_ROUTE (0).
NETLINK_PROTOCOLS = {0: "NETLINK_ROUTE"}


@functools.cache
def notebook_profile() -> dict[str, Any]:
    """The notebook containers' seccomp profile (a fresh parse, cached)."""
    text = resources.files(__package__).joinpath("notebook.json").read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:  # a broken package, never user input
        raise RuntimeError(
            f"havre/enclave/seccomp/notebook.json is not valid JSON: {err}"
        ) from None


@functools.cache
def notebook_profile_text() -> str:
    """The profile as compact JSON, as Docker takes it in ``security_opt`` (``seccomp=...``)."""
    return json.dumps(notebook_profile(), separators=(",", ":"), sort_keys=True)


def security_opt() -> str:
    """The ``security_opt`` entry that applies the profile to a container."""
    return f"seccomp={notebook_profile_text()}"
