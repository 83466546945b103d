"""Havre's own seccomp profiles: notebook and re-execution containers, and remote desktops.

``notebook.json`` (package data, versioned here) is an allow-list in Docker's profile format:
every system call not listed gets EPERM. It allows what Docker's default profile allows an
unprivileged container, minus io_uring, ptrace and other cross-process memory access,
userfaultfd, perf_event_open, bpf and the kernel keyrings; ``socket()`` is allowed only for
AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with NETLINK_ROUTE (``getifaddrs()``, which ZeroMQ
and so every Jupyter kernel needs: without it a kernel aborts at start), so no AF_PACKET,
AF_VSOCK or other netlink protocol; ``clone`` can't make namespaces. See
docs/architecture.md ("System calls") for what was tested.

``desktop.json`` is the remote desktops' profile (``access: desktop`` projects): the notebook
profile plus the rules it lists, each one measured as needed by the desktop (Xvnc, nginx,
websockify, the window manager, Chromium); today none (its comment says how it was measured).
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


#: The profiles by name (the package's JSON files).
PROFILES = ("notebook", "desktop")


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:  # a broken package, never user input
        raise RuntimeError(f"havre/enclave/seccomp/{name} is not valid JSON: {err}") from None


@functools.cache
def desktop_additions() -> tuple[dict[str, Any], ...]:
    """The rules ``desktop.json`` adds to the notebook profile (each measured as needed)."""
    delta = _read("desktop.json")
    if delta.get("extends") != "notebook.json" or not isinstance(delta.get("syscalls"), list):
        raise RuntimeError(
            "havre/enclave/seccomp/desktop.json must extend notebook.json with a list of rules."
        )
    return tuple(delta["syscalls"])


@functools.cache
def desktop_profile() -> dict[str, Any]:
    """The remote desktops' profile: the notebook profile plus :func:`desktop_additions`,
    added before the notebook's refusals (a fresh copy, cached)."""
    profile = json.loads(notebook_profile_text())
    profile["syscalls"] = [*desktop_additions(), *profile["syscalls"]]
    return profile


@functools.cache
def profile_text(name: str = "notebook") -> str:
    """Profile ``name`` (one of :data:`PROFILES`) as compact JSON, as Docker takes it."""
    if name == "notebook":
        return notebook_profile_text()
    if name == "desktop":
        return json.dumps(desktop_profile(), separators=(",", ":"), sort_keys=True)
    raise ValueError(f"no seccomp profile {name!r}: one of {', '.join(PROFILES)}.")


def security_opt(name: str = "notebook") -> str:
    """The ``security_opt`` entry that applies profile ``name`` to a container."""
    return f"seccomp={profile_text(name)}"
