"""The hardening tests read limits on both cgroup layouts (v2 is Debian 12's default)."""

from __future__ import annotations

import pytest

from tests.integration.cgroups import Limits, container_limits

V1 = {
    "/sys/fs/cgroup/pids/pids.max": "256\n",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648\n",
    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "150000\n",
    "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
}
V2 = {
    "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
    "/sys/fs/cgroup/pids.max": "256\n",
    "/sys/fs/cgroup/memory.max": "2147483648\n",
    "/sys/fs/cgroup/cpu.max": "150000 100000\n",
}


@pytest.mark.parametrize(("files", "layout"), [(V1, "v1"), (V2, "v2")])
def test_limits_are_read_on_both_layouts(files, layout):
    assert container_limits(files.get) == Limits(layout, 256, 2 * 1024**3, 1.5)


def test_no_limit_reads_as_none_on_both_layouts():
    v1 = {**V1, "/sys/fs/cgroup/pids/pids.max": "max\n"}
    v1["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = str(2**63 - 4096)
    v1["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"] = "-1"
    v2 = {**V2, "/sys/fs/cgroup/pids.max": "max", "/sys/fs/cgroup/memory.max": "max"}
    v2["/sys/fs/cgroup/cpu.max"] = "max 100000"
    assert container_limits(v1.get) == Limits("v1", None, None, None)
    assert container_limits(v2.get) == Limits("v2", None, None, None)
