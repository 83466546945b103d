"""The hardening every notebook and re-execution container gets (one function: the spawn
broker applies it to notebook servers and re-execution runs alike, so whatever it gains,
re-execution gains too). What each control closes: ``docs/architecture.md``, rows 7-9 and 17.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from havre.enclave.config import Project
from havre.enclave.seccomp import security_opt as seccomp_security_opt

__all__ = ["TMP_SIZE", "hardened_host_config"]

#: the size of the tmpfs on /tmp (the root filesystem is read-only)
TMP_SIZE = "512m"


def hardened_host_config(
    project: Project,
    *,
    network: str,
    dns: str = "",
    tmp_size: str = TMP_SIZE,
    extra_sysctls: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The docker-py HostConfig arguments every notebook and re-execution container gets."""
    sysctls = {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        # no unprivileged ICMP sockets (Docker 20.10 allows them to every gid)
        "net.ipv4.ping_group_range": "1 0",
    }
    sysctls.update(extra_sysctls or {})
    return {
        "cap_drop": ["ALL"],
        # Havre's own seccomp allow-list (havre/enclave/seccomp/notebook.json), not Docker's
        "security_opt": ["no-new-privileges:true", seccomp_security_opt()],
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_size},mode=1777"},
        "pids_limit": project.limits.pids,
        "mem_limit": project.limits.memory_bytes,
        "memswap_limit": project.limits.memory_bytes,
        "cpu_period": 100_000,
        "cpu_quota": int(project.limits.cpu * 100_000),
        "dns": [dns or "127.0.0.1"],
        "dns_search": ["."],
        "sysctls": sysctls,
        "ipc_mode": "private",
        "privileged": False,
        "network_mode": network,
    }
