"""Container hardening: the one place that decides it for every container of an enclave.

:func:`container_hardening` is the base every container gets (a notebook server, a
re-execution run, and each service of the stack: hub, egress, runner, identity provider,
broker): no capabilities, no privilege gain (``no-new-privileges``), a read-only root
filesystem with a small ``/tmp`` tmpfs, a process limit, never privileged. On top of it:

* :func:`hardened_host_config` - notebook and re-execution containers (researchers' code):
  Havre's own seccomp allow-list (``havre/enclave/seccomp``), the project's memory and CPU
  limits, no IPv6, no ICMP sockets, a private IPC namespace, a resolver on the gateway only.
  The spawn broker applies it to notebook servers and re-execution runs alike, so whatever it
  gains, re-execution gains too.
* :func:`service_hardening` - the stack's service containers (``havre.host.services``): no IP
  forwarding between the networks they join. They run Havre's code, not researchers', and keep
  Docker's default seccomp profile (Havre's allow-list is cut to what a notebook needs).

Each service adds only what it needs beyond that (the hub's published port, the broker's three
capabilities) where it is started. What each control closes: ``docs/architecture.md``, rows
7-9 and 17.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from havre.enclave.config import Project
from havre.enclave.seccomp import security_opt as seccomp_security_opt

__all__ = [
    "NO_FORWARDING_SYSCTLS",
    "TMP_SIZE",
    "container_hardening",
    "hardened_host_config",
    "service_hardening",
]

#: the size of the tmpfs on /tmp of notebook and re-execution containers (the root filesystem
#: is read-only)
TMP_SIZE = "512m"

#: No routing inside the stack's containers: the hub and egress sit on the front network and
#: every project network, and a container's network namespace inherits the host's
#: ``ip_forward=1`` (Docker's), so without these they would forward between them.
NO_FORWARDING_SYSCTLS: Mapping[str, str] = {
    "net.ipv4.ip_forward": "0",
    "net.ipv4.conf.all.forwarding": "0",
    "net.ipv4.conf.default.forwarding": "0",
    "net.ipv6.conf.all.forwarding": "0",
    "net.ipv6.conf.default.forwarding": "0",
}


def container_hardening(
    *,
    tmp_size: str,
    pids: int,
    havre_seccomp: bool = False,
    shared_tmp: bool = False,
    seccomp_profile: str = "notebook",
) -> dict[str, Any]:
    """The docker-py arguments (``HostConfig`` names, also valid for ``containers.run``) every
    container of an enclave gets.

    ``havre_seccomp`` puts Havre's seccomp allow-list ``seccomp_profile`` (``"notebook"``, or
    ``"desktop"`` for remote desktops: :mod:`havre.enclave.seccomp`) in place of Docker's
    default profile;
    ``shared_tmp`` makes ``/tmp`` sticky and writable by every uid (mode 1777), for containers
    whose user is not known when the image is built.
    """
    if pids < 1:
        raise ValueError(f"a container's process limit must be at least 1, not {pids}.")
    security_opt = ["no-new-privileges:true"]
    if havre_seccomp:
        security_opt.append(seccomp_security_opt(seccomp_profile))
    tmp = f"rw,nosuid,nodev,size={tmp_size}"
    if shared_tmp:
        tmp += ",mode=1777"
    return {
        "cap_drop": ["ALL"],
        "security_opt": security_opt,
        "read_only": True,
        "tmpfs": {"/tmp": tmp},
        "pids_limit": pids,
        "privileged": False,
    }


def service_hardening(*, tmp_size: str, pids: int) -> dict[str, Any]:
    """What every service container of the stack gets: :func:`container_hardening` with
    Docker's default seccomp profile, and no IP forwarding."""
    return {
        **container_hardening(tmp_size=tmp_size, pids=pids),
        "sysctls": dict(NO_FORWARDING_SYSCTLS),
    }


def hardened_host_config(
    project: Project,
    *,
    network: str,
    dns: str = "",
    tmp_size: str = TMP_SIZE,
    extra_sysctls: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The docker-py HostConfig arguments every notebook and re-execution container gets:
    :func:`container_hardening` with Havre's seccomp profile, plus the project's limits."""
    sysctls = {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        # no unprivileged ICMP sockets (Docker 20.10 allows them to every gid)
        "net.ipv4.ping_group_range": "1 0",
    }
    sysctls.update(extra_sysctls or {})
    return {
        **container_hardening(
            tmp_size=tmp_size, pids=project.limits.pids, havre_seccomp=True, shared_tmp=True
        ),
        "mem_limit": project.limits.memory_bytes,
        "memswap_limit": project.limits.memory_bytes,
        "cpu_period": 100_000,
        "cpu_quota": int(project.limits.cpu * 100_000),
        "dns": [dns or "127.0.0.1"],
        "dns_search": ["."],
        "sysctls": sysctls,
        "ipc_mode": "private",
        "network_mode": network,
    }


#: What a Swarm service's task can't be given on Docker Engine 20.10 (API 1.41) that
#: :func:`hardened_host_config` gives a single-host container, and what stands in for it
#: (``docs/sysadmin/cluster.md``, the hardening-parity table; each has a test in
#: ``tests/cluster/test_swarm_servers.py``).
SWARM_GAPS: Mapping[str, str] = {
    "no-new-privileges": "OPEN: the task's capability bounding set is empty (cap_drop ALL), "
    "so a setuid file gives no capability; the notebook image still has setuid/setgid files "
    "(a setuid-root one gives uid 0 without capabilities): strip them from the image, or run "
    "an engine with API 1.46",
    "Havre's seccomp profile": "Docker's default seccomp profile applies to every task; ICMP "
    "and IPv6 sockets are closed by sysctls instead of by the profile",
    "memory+swap limit": "the task's memory limit only; the engine's default swap (as much "
    "again) is allowed",
}


def swarm_task_hardening(project: Project, *, dns: str = "", tmp_size_bytes: int = 512 << 20):
    """The parts of a Swarm ``TaskTemplate`` (API 1.41 field names) that harden a notebook
    server: as much of :func:`hardened_host_config` as services support (see
    :data:`SWARM_GAPS` for the rest): no capabilities, read-only root, a ``/tmp`` tmpfs, the
    same sysctls (no IPv6, no ICMP sockets), the project's process, memory and CPU limits, the
    resolver on the gateway only."""
    host = hardened_host_config(project, network="unused", dns=dns)
    return {
        "ContainerSpec": {
            "CapabilityDrop": ["ALL"],
            "ReadOnly": True,
            "Sysctls": dict(host["sysctls"]),
            "Mounts": [
                {
                    "Type": "tmpfs",
                    "Target": "/tmp",
                    "TmpfsOptions": {"SizeBytes": tmp_size_bytes, "Mode": 0o1777},
                }
            ],
            "DNSConfig": {"Nameservers": list(host["dns"]), "Search": ["."]},
            "Init": False,
        },
        "Resources": {
            "Limits": {
                "NanoCPUs": int(project.limits.cpu * 1_000_000_000),
                "MemoryBytes": project.limits.memory_bytes,
                "Pids": project.limits.pids,
            }
        },
    }
