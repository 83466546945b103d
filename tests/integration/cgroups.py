"""Read a container's resource limits from inside it, on cgroup v1 or v2.

Debian 12 hosts boot with the unified hierarchy (cgroup v2); older hosts and this project's CI
machine use v1. The hardening tests read the limits through :func:`container_limits`, which
finds the layout from the files present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: v2's "no limit" word, in pids.max, memory.max and cpu.max
UNLIMITED = "max"


@dataclass(frozen=True)
class Limits:
    layout: str  # "v1" or "v2"
    pids: int | None  # None: no limit
    memory_bytes: int | None
    cpus: float | None


def _number(text: str) -> int | None:
    text = text.strip()
    return None if text in (UNLIMITED, "-1", "") else int(text)


def container_limits(read: Callable[[str], str | None]) -> Limits:
    """The limits, given ``read(path)`` returning a file's text inside the container (None
    when it does not exist)."""
    if read("/sys/fs/cgroup/cgroup.controllers") is not None:
        cpu_max = (read("/sys/fs/cgroup/cpu.max") or UNLIMITED).split()
        quota = _number(cpu_max[0])
        period = int(cpu_max[1]) if len(cpu_max) > 1 else 100_000
        return Limits(
            "v2",
            _number(read("/sys/fs/cgroup/pids.max") or UNLIMITED),
            _number(read("/sys/fs/cgroup/memory.max") or UNLIMITED),
            None if quota is None else quota / period,
        )
    memory = _number(read("/sys/fs/cgroup/memory/memory.limit_in_bytes") or "-1")
    if memory is not None and memory >= 2**62:  # v1's "no limit" is a huge number
        memory = None
    quota = _number(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or "-1")
    period = int(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") or "100000")
    return Limits(
        "v1",
        _number(read("/sys/fs/cgroup/pids/pids.max") or UNLIMITED),
        memory,
        None if quota is None else quota / period,
    )
