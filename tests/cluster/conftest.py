"""The three-engine test cluster, once per pytest session, for the tests marked ``cluster``.

``test_cluster`` builds it (``tests/cluster/engines.py``): node 1 the swarm manager, nodes 2
and 3 workers, and removes everything at the end. It skips only when the machine lacks a
capability (root, network namespaces, iptables, dockerd); that skip is not on the CI allow-list
(``tests/skip_policy.py``, ``NEVER_ALLOWED``), so a CI run without a cluster fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.cluster import engines

#: short (interface names), distinct per run so that two sessions on one machine keep apart
CLUSTER_NAME = os.environ.get("HAVRE_TEST_CLUSTER", f"hc{os.getpid() % 100000}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[engines.Cluster]:
    lacking = engines.missing_capability()
    if lacking:
        pytest.skip(f"needs a test cluster: {lacking}")
    engines.down(CLUSTER_NAME)  # a crashed earlier run with the same name
    cluster = engines.up(CLUSTER_NAME, nodes=3)
    try:
        yield cluster
    finally:
        left = cluster.down()
        assert not left, f"the test cluster left things behind: {left}"
