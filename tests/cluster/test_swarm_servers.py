"""The enclave on the three-engine test cluster (issue #18), deployed by cluster.yml + site.yml
(``havre up`` on the manager from the one config site.yml renders); notebook servers are Swarm
services that land on the worker holding their project's data, become ready through the hub
and proxy on the manager, and read ``/data``.

Cluster: node 1 manager (hub, proxy, egress, identity provider, broker), node 2 labelled
``havre.data.cardio=true``, node 3 ``havre.data.diabetes=true`` (``conftest.DATA_LABELS``), no
worker ``havre.data.onco=true``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.layout import hub_container_name
from tests.cluster.conftest import DATA_LABELS, ClusterEnclave
from tests.cluster.deploy import VISITS
from tests.integration.hub_client import HubUser
from tests.integration.test_identity import Provider


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
    # the file the operator put in cardio's data folder before site.yml
    out = alice.run_code("cardio", "print(open('/data/visits.csv').read(), end='')\n")
    assert out["error"] is None, out
    assert out["stdout"] == VISITS
    # control: the other project's member lands on the other labelled worker
    bob = cluster_enclave.user("bob")
    r = bob.start_server("diabetes")
    assert r.status_code in (201, 202), cluster_enclave.diagnose("bob", "diabetes", r.text)
    bob.wait_ready("diabetes")
    other = cluster_enclave.node_of("bob", "diabetes")
    assert other is not None and other.index == DATA_LABELS["diabetes"], other
    assert node is not cluster.manager


#: read inside a container: capabilities, privilege gain, seccomp, uid, root writable, sysctls
PROBE = (
    "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; echo uid $(id -u); "
    "echo init-NoNewPrivs $(grep -E '^NoNewPrivs:' /proc/1/status | cut -f2); "
    "touch /probe-root 2>/dev/null && echo root-writable || echo root-read-only; "
    "echo ping $(cat /proc/sys/net/ipv4/ping_group_range); "
    "echo ipv6-off $(cat /proc/sys/net/ipv6/conf/all/disable_ipv6); "
    "echo setid-files $(find / -xdev -perm /6000 -type f 2>/dev/null | wc -l)"
)


def _fields(out: str) -> dict[str, str]:
    """``key value`` lines (``/proc/self/status`` separates them by a tab) as a dict."""
    pairs = (line.split(None, 1) for line in out.splitlines() if line.strip())
    return {p[0]: (p[1].strip() if len(p) > 1 else "") for p in pairs}


def _probe(node, container: str) -> dict[str, str]:
    return _fields(node.docker("exec", container, "sh", "-c", PROBE).stdout)


def test_hardening_seen_from_inside_a_server_on_a_worker(cluster_enclave: ClusterEnclave) -> None:
    """What the server on worker 2 sees of its own hardening, against the same probe in a
    plain container of the same image on the same worker (the control). The documented gaps
    of Swarm services on API 1.41 (havre.enclave.hardening.SWARM_GAPS) show as such: no
    no-new-privileges flag (NoNewPrivs 0), compensated by a notebook image without
    setuid/setgid files and the empty capability bounding set, and Docker's default seccomp
    profile (mode 2 in both)."""
    found = cluster_enclave.server_container("alice", "cardio")
    assert found is not None, "alice's cardio server is not running (first test failed?)"
    node, container = found
    server = _probe(node, container)
    control_out = node.docker(
        # as root, with Docker's defaults: what the hardening takes away
        "run",
        "--rm",
        "--user",
        "0",
        "--entrypoint",
        "sh",
        DEFAULT_NOTEBOOK_IMAGE,
        "-c",
        # the control also plants a setuid file, which the same find must count
        "cp /bin/true /usr/local/bin/planted && chmod u+s /usr/local/bin/planted; " + PROBE,
    ).stdout
    control = _fields(control_out)
    rows = [
        ("CapEff:", control["CapEff:"], server["CapEff:"]),
        ("uid", control["uid"], server["uid"]),
        ("root filesystem", _root(control), _root(server)),
        ("ping", control["ping"], server["ping"]),
        ("ipv6-off", control["ipv6-off"], server["ipv6-off"]),
        ("CapBnd:", control["CapBnd:"], server["CapBnd:"]),
        ("setid-files", control["setid-files"], server["setid-files"]),
        ("NoNewPrivs: (exec'd probe)", control["NoNewPrivs:"], server["NoNewPrivs:"]),
        ("NoNewPrivs: (the task's init)", control["init-NoNewPrivs"], server["init-NoNewPrivs"]),
        ("Seccomp: (gap: default profile)", control["Seccomp:"], server["Seccomp:"]),
    ]
    HARDENING_TABLE.extend(rows)
    assert int(control["CapEff:"], 16) != 0 and int(server["CapEff:"], 16) == 0
    assert control["uid"] == "0" and int(server["uid"]) >= 2_000_000
    assert _root(control) == "root-writable" and _root(server) == "root-read-only"
    assert control["ping"] != "1 0" and server["ping"] == "1 0"
    # this engine already turns IPv6 off in every container: no control difference to show
    assert server["ipv6-off"] == "1"
    # no capability can come back through a setuid binary: the bounding set is empty
    assert int(control["CapBnd:"], 16) != 0 and int(server["CapBnd:"], 16) == 0
    # a service can't set no-new-privileges on API 1.41 (docs/sysadmin/cluster.md): the
    # compensating control is an image without setuid/setgid files (the find counts the
    # control's planted one, so it would count any left in the image)
    assert int(control["setid-files"]) == 1 and int(server["setid-files"]) == 0
    # the documented gaps: the flag is off in a service (as in the plain control) and the
    # seccomp filter is Docker's default (mode 2, filtering, in both)
    assert server["Seccomp:"] == "2"
    limits = json.loads(
        node.docker("inspect", "--format", "{{json .HostConfig}}", container).stdout
    )
    project = cluster_enclave.config.project("cardio")
    assert limits["PidsLimit"] == project.limits.pids
    assert limits["Memory"] == project.limits.memory_bytes
    assert limits["NanoCpus"] == int(project.limits.cpu * 1e9)
    assert limits["CapDrop"] == ["ALL"] and limits["ReadonlyRootfs"] is True


def _root(fields: dict[str, str]) -> str:
    return "root-writable" if "root-writable" in fields else "root-read-only"


#: (probe, control: plain container, server as a Swarm service), printed by the conftest
HARDENING_TABLE: list[tuple[str, str, str]] = []


#: run as ``python3 -c REACH TOKEN JSON-TARGETS`` (a list of [label, host, port]): one TCP
#: connection per target, all at once (3 s each); prints {label: "open" or the error}
REACH = r"""
import json, socket, sys, threading
token, targets = sys.argv[1], json.loads(sys.argv[2])
found = {}
def reach(label, host, port):
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(token.encode()); s.close(); found[label] = "open"
    except Exception as e:
        found[label] = type(e).__name__ + ": " + str(e)
threads = [threading.Thread(target=reach, args=t) for t in targets]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(found))
"""


def _reach(run, targets: list[tuple[str, str, int]], token: str) -> dict[str, str]:
    """What ``run`` (a command prefix: docker exec into a container, or nsenter into a node's
    namespace) reaches of ``targets``."""
    done = run("python3", "-c", REACH, token, json.dumps(targets))
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_isolation_probe_table_across_hosts(cluster_enclave: ClusterEnclave) -> None:
    """From alice's cardio server on worker 2, nothing reaches bob's diabetes server on
    worker 3, the worker hosts, the manager's host ports (hub 8000, identity provider 8001),
    the swarm ports (2377 on the manager, 7946 on every node) or a canary on the test bridge
    outside the overlays. Each probe has a positive control on the same cluster: the hub
    (attached to every project's overlay) reaches bob's server, and the host of alice's own
    worker reaches every host address and the canary (so each target listens and is routable
    on the cluster; only the server's confinement stands between)."""
    from tests.integration.canaries import new_token, tcp_canary

    cluster = cluster_enclave.cluster
    here = cluster_enclave.server_container("alice", "cardio")
    there = cluster_enclave.server_container("bob", "diabetes")
    assert here is not None and there is not None, "the servers of the first test are gone"
    node, container = here
    nets = json.loads(
        there[0]
        .docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", there[1])
        .stdout
    )
    bob_address = next(n["IPAddress"] for n in nets.values() if n.get("IPAddress"))
    canary = tcp_canary(cluster.bridge_address, 0)
    try:
        server_targets = [("bob's server on worker 3 (:8888)", bob_address, 8888)]
        host_targets = [
            *(
                (f"{n.role} {n.index} host {n.address}:7946", n.address, 7946)
                for n in cluster.nodes
            ),
            ("manager host :2377 (swarm control)", cluster.manager.address, 2377),
            ("manager host :8000 (hub)", cluster.manager.address, 8000),
            ("manager host :8001 (identity provider)", cluster.manager.address, 8001),
            (f"outside canary {cluster.bridge_address}", cluster.bridge_address, canary.port),
        ]
        attack_token, control_token = new_token(), new_token()
        attack = _reach(
            lambda *a: node.docker("exec", container, *a),
            server_targets + host_targets,
            attack_token,
        )
        hub = cluster.manager.docker(
            "ps", "-q", "--filter", f"name={hub_container_name(cluster_enclave.config)}"
        ).stdout.split()[0]
        control = _reach(
            lambda *a: cluster.manager.docker("exec", hub, *a), server_targets, control_token
        )
        control |= _reach(
            lambda *a: node.nsenter(sys.executable, *a[1:]), host_targets, control_token
        )
        attack_seen, control_seen = canary.saw(attack_token), canary.saw(control_token)
    finally:
        canary.close()
    for label, _host, _port in server_targets + host_targets:
        PROBE_TABLE.append((label, attack[label], control[label]))
    assert all(control[label] == "open" for label in control), control
    assert control_seen and not attack_seen
    assert not any(result == "open" for result in attack.values()), attack


#: (target, from alice's server on worker 2, control), printed by the conftest
PROBE_TABLE: list[tuple[str, str, str]] = []


def test_losing_membership_stops_a_server_on_a_remote_worker(
    cluster_enclave: ClusterEnclave,
) -> None:
    """The hub and broker on the manager stop a server that runs on worker 3 when its user
    leaves the project; bob's server on the same worker (the control) keeps running."""
    provider = Provider(cluster_enclave)
    gina = HubUser(
        cluster_enclave.url,
        "cl-leaver",
        provider.put_user("cl-leaver", ["p-diabetes"]),
    )
    gina.session.trust_env = False
    gina.login()
    assert gina.start_server("diabetes").status_code in (201, 202)
    gina.wait_ready("diabetes")
    found = cluster_enclave.server_container("cl-leaver", "diabetes")
    assert found is not None and found[0].index == DATA_LABELS["diabetes"]
    node, container = found
    provider.set_groups(gina.name, ["p-cardio"])
    deadline = time.monotonic() + 60
    while node.docker("ps", "-q", "--filter", f"id={container}").stdout.strip():
        assert time.monotonic() < deadline, "the leaver's server still runs on worker 3"
        time.sleep(0.5)
    assert cluster_enclave.node_of("cl-leaver", "diabetes") is None
    # control: bob, still a member, keeps his server on the same worker
    assert cluster_enclave.server_container("bob", "diabetes") is not None


def _left_of(cluster_enclave: ClusterEnclave, user: str, project: str) -> list[str]:
    """The service and containers (running or not) of ``user``'s ``project`` server on any
    engine."""
    name = cluster_enclave.config.container_name(project, user)
    found = cluster_enclave.cluster.manager.docker(
        "service", "ls", "-q", "--filter", f"name={name}"
    ).stdout.split()
    for node in cluster_enclave.cluster.nodes:
        found += node.docker("ps", "-aq", "--filter", f"name={name}").stdout.split()
    return found


def test_a_server_never_starts_on_a_node_without_its_projects_data(
    cluster_enclave: ClusterEnclave,
) -> None:
    """No worker carries onco's data label: carol's start is refused at once with a sentence
    through the hub (not a service pending in Swarm), and nothing of it is left on any engine.
    Control: once worker 2 holds onco's data (its folder, its label, as cluster.yml and
    site.yml's worker play make them), the same start succeeds there."""
    from havre.enclave.identities import load_table_any, table_path

    cluster = cluster_enclave.cluster
    carol = cluster_enclave.user("carol")
    answer = carol.start_server("onco")
    assert answer.status_code == 503, (answer.status_code, answer.text)
    assert "No worker holding project 'onco'" in answer.text, answer.text
    assert "havre.data.onco=true" in answer.text, answer.text
    # (not the sentence of a service that waited out the broker's placement timeout)
    assert "Swarm could not start" not in answer.text
    assert carol.server_model("onco") is None or not carol.server_model("onco").get("ready")
    assert _left_of(cluster_enclave, "carol", "onco") == []
    # control: worker 2 gets onco's data and its label
    worker = cluster.nodes[DATA_LABELS["cardio"] - 1]
    data = cluster_enclave.config.project("onco").data_path
    gid = load_table_any(table_path(cluster_enclave.config.state_dir)).projects["onco"]
    data.mkdir(parents=True, exist_ok=True)
    os.chown(data, 0, gid)
    data.chmod(0o750)
    cluster.label_node(worker, **{"havre.data.onco": "true"})
    try:
        deadline = time.monotonic() + 30
        while carol.server_model("onco") is not None:  # the refused spawn, forgotten
            assert time.monotonic() < deadline
            time.sleep(0.5)
        answer = carol.start_server("onco")
        assert answer.status_code in (201, 202), cluster_enclave.diagnose(
            "carol", "onco", answer.text
        )
        carol.wait_ready("onco")
        assert cluster_enclave.node_of("carol", "onco") is worker
        carol.stop_server("onco")
    finally:
        node_id = cluster.node_ids()[worker.name]
        cluster.manager.docker("node", "update", "--label-rm", "havre.data.onco", node_id)


def test_draining_a_worker_stops_its_servers_cleanly(cluster_enclave: ClusterEnclave) -> None:
    """A drained worker's servers stop (no other worker holds the project's data, so Swarm
    can't move them) and the hub forgets the server. Control: alice's server on the other
    worker runs on."""
    cluster = cluster_enclave.cluster
    worker = cluster.nodes[DATA_LABELS["diabetes"] - 1]
    found = cluster_enclave.server_container("bob", "diabetes")
    assert found is not None
    bob = cluster_enclave.user("bob")
    node_id = cluster.node_ids()[worker.name]
    cluster.manager.docker("node", "update", "--availability", "drain", node_id)
    try:
        deadline = time.monotonic() + 90
        while bob.server_model("diabetes") is not None:
            assert time.monotonic() < deadline, "the hub still lists bob's server"
            time.sleep(0.5)
        assert not worker.docker("ps", "-q", "--filter", f"id={found[1]}").stdout.strip()
        assert cluster_enclave.node_of("bob", "diabetes") is None
        assert cluster_enclave.server_container("alice", "cardio") is not None  # control
        # a new start while diabetes's only worker is drained: refused at once, and nothing
        # new on any engine (the drained task's exited container may still be listed)
        before = set(_left_of(cluster_enclave, "bob", "diabetes"))
        answer = bob.start_server("diabetes")
        assert answer.status_code == 503, (answer.status_code, answer.text)
        assert "drained, paused or down" in answer.text, answer.text
        assert set(_left_of(cluster_enclave, "bob", "diabetes")) <= before
    finally:
        cluster.manager.docker("node", "update", "--availability", "active", node_id)
