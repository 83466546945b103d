"""The test cluster itself: three engines in a swarm, and an overlay that crosses them.

The base every other cluster test stands on: if these fail, the harness is broken, not Havre.
"""

from __future__ import annotations

import json

from tests.cluster.engines import Cluster


def test_three_engines_form_one_swarm(test_cluster: Cluster) -> None:
    listed = test_cluster.manager.docker("node", "ls", "--format", "{{json .}}").stdout
    nodes = [json.loads(line) for line in listed.splitlines()]
    assert len(nodes) == 3
    assert all(node["Status"] == "Ready" for node in nodes)
    assert sum(1 for node in nodes if node["ManagerStatus"] == "Leader") == 1
    # each engine is its own: three node ids, one per socket
    assert len(set(test_cluster.node_ids().values())) == 3


def test_nodes_have_no_route_out(test_cluster: Cluster) -> None:
    """A node reaches the test bridge and nothing else: no default route in its namespace."""
    for node in test_cluster.nodes:
        routes = node.nsenter("ip", "route").stdout
        assert "default" not in routes, (node.name, routes)
        assert test_cluster.subnet in routes
