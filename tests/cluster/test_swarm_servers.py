"""The demo enclave on the three-engine test cluster (issue #18): ``havre up`` on the manager
from one config; notebook servers are Swarm services that land on the worker holding their
project's data, become ready through the hub and proxy on the manager, and read ``/data``.

Cluster: node 1 manager (hub, proxy, egress, identity provider, broker), node 2 labelled
``havre.data.cardio=true``, node 3 ``havre.data.diabetes=true`` (``conftest.DATA_LABELS``).
"""

from __future__ import annotations

from tests.cluster.conftest import DATA_LABELS, ClusterEnclave


def test_a_members_server_lands_on_the_worker_holding_its_data(
    cluster_enclave: ClusterEnclave,
) -> None:
    cluster = cluster_enclave.cluster
    alice = cluster_enclave.user("alice")
    r = alice.start_server("cardio")
    assert r.status_code in (201, 202), r.text
    alice.wait_ready("cardio")
    node = cluster_enclave.node_of("alice", "cardio")
    assert node is not None and node.index == DATA_LABELS["cardio"], node
    # the same image on the manager and the other worker: Swarm chose by the label alone
    assert node.role == "worker"
    out = alice.run_code(
        "cardio",
        "import socket, pathlib\n"
        "print(pathlib.Path('/data/hospital_stays.csv').read_text().splitlines()[0])\n",
    )
    assert out["error"] is None, out
    assert out["stdout"].startswith("stay_id,"), out
    # control: the other project's member lands on the other labelled worker
    bob = cluster_enclave.user("bob")
    assert bob.start_server("diabetes").status_code in (201, 202)
    bob.wait_ready("diabetes")
    other = cluster_enclave.node_of("bob", "diabetes")
    assert other is not None and other.index == DATA_LABELS["diabetes"], other
    assert node is not cluster.manager
