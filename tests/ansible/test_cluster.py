"""The cluster playbooks, run for real against a test cluster of Docker engines on this machine.

The test cluster (``tests/cluster/engines.py``) is three engines, each in its own network
namespace on a test bridge. Its swarm is taken apart first, so that ``cluster.yml`` makes it:
each engine is an inventory host reached with the local connection whose commands run inside
its namespace (``ansible_shell_executable``: a wrapper entering the namespace with
``nsenter --net``), its Docker commands going to its own engine (``havre_docker_url``).

The module forms the swarm (n1 manager, n2 worker) with ``cluster.yml``, checks the second run
changes nothing, the node labels follow the inventory, the firewall accepts the swarm ports from
cluster hosts only (attack from the host's bridge address, control from a peer and from the host
with the rules removed), adds n3 with ``swarm-add-worker.yml`` and drains workers with
``swarm-drain.yml`` (a task moves to the other node with the project's data; one whose data is
on no other node stops). The enclave deployed on a swarm by ``cluster.yml`` + ``site.yml`` is
``tests/cluster`` (``tests/cluster/deploy.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster import engines
from tests.cluster.deploy import Run

# the module's fixture builds its own test cluster (ours drains and removes nodes)
pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
#: a small image every engine gets, for the swarm's test services
SMALL_IMAGE = "havre/base:bookworm"
LABELS = {
    "n1": {},
    "n2": {"havre.data.cardio": "true", "havre.data.diabetes": "true"},
    "n3": {"havre.data.cardio": "true"},
}
FIGURES: dict[str, object] = {}
#: overlay networks inside the test cluster's namespaces (the harness's pool)
OVERLAY_POOL = f"10.{engines.OVERLAY_POOL_SECOND_OCTET}.0.0/16"


class ClusterInventory:
    """The inventory of the test cluster, rewritten as hosts are added."""

    def __init__(self, cluster: engines.Cluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.nodes = {node.name.rsplit("-", 1)[1]: node for node in cluster.nodes}
        self.workers = ["n2"]
        self.labels = {name: dict(labels) for name, labels in LABELS.items()}
        self.path = root / "inventory" / "hosts.yml"
        self.path.parent.mkdir(parents=True)
        for name, node in self.nodes.items():
            # every command Ansible runs for this host runs in its network namespace
            node.shell_wrapper(root / name / "sh")

    def host_vars(self, name: str) -> dict:
        node, here = self.nodes[name], self.root / name
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
            "ansible_shell_executable": str(here / "sh"),
            "havre_docker_url": node.url,
            "havre_swarm_advertise_addr": node.address,
            "havre_swarm_node_labels": self.labels.get(name, {}),
            "havre_firewall_dir": str(here / "firewall"),
            "havre_firewall_script": str(here / "havre-firewall"),
            "havre_firewall_unit": str(here / "havre-firewall.service"),
            # the Docker host role merges into this copy, never into the machine's daemon.json
            # (which every engine started on this machine would read)
            "havre_docker_host_daemon_json": str(here / "docker" / "daemon.json"),
            "havre_docker_host_restart_engine": False,
        }

    def write(self) -> None:
        members = ["n1", *self.workers]
        peers = [self.nodes[name].address for name in members]
        inventory = {
            "havre_cluster": {
                "children": {
                    "havre_managers": {"hosts": {"n1": self.host_vars("n1")}},
                    "havre_workers": {"hosts": {n: self.host_vars(n) for n in self.workers}},
                },
                "vars": {
                    "havre_enclave_name": "havre" + self.cluster.name,
                    "havre_firewall_cluster_peers": peers,
                    "havre_swarm_default_addr_pool": OVERLAY_POOL,
                },
            }
        }
        self.path.write_text(yaml.safe_dump(inventory))

    def playbook(self, name: str, *args: str, extra: dict | None = None) -> Run:
        command = [str(PLAYBOOK), "-i", str(self.path), name]
        if extra:
            command += ["-e", json.dumps(extra)]
        started = time.monotonic()
        done = subprocess.run(
            [*command, *args],
            cwd=ANSIBLE,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        )
        return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)

    def manager(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.nodes["n1"].docker(*args, check=check)

    def node_id(self, name: str) -> str:
        return self.nodes[name].docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def swarm_nodes(self) -> dict[str, dict]:
        """Each swarm node's spec and status, by its address."""
        ids = self.manager("node", "ls", "--quiet").stdout.split()
        found = {}
        for node_id in ids:
            attrs = json.loads(self.manager("node", "inspect", node_id).stdout)[0]
            found[attrs["Status"]["Addr"]] = attrs
        return found


def missing_for_cluster_playbooks() -> str | None:
    """What this machine lacks to run playbooks against a test cluster (None: nothing)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, Docker engines)"
    if not PLAYBOOK.exists():
        return "needs ansible-core in the venv (pip install -e '.[dev]')"
    return engines.missing_capability()


def _missing() -> str | None:
    lacking = missing_for_cluster_playbooks()
    if lacking:
        return lacking
    if subprocess.run(["docker", "image", "inspect", SMALL_IMAGE], capture_output=True).returncode:
        return f"needs image {SMALL_IMAGE}: build it with `bash images/build.sh --only base`"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    lacking = _missing()
    if lacking:
        pytest.skip(lacking)
    name = "ta" + secrets.token_hex(2)
    made = engines.up(name, nodes=3, images=[SMALL_IMAGE])
    try:
        # take the harness's swarm apart: the playbook is to make it
        for node in reversed(made.nodes):
            node.docker("swarm", "leave", "--force")
        root = Path(tmp_path_factory.mktemp("cluster"))
        inventory = ClusterInventory(made, root)
        inventory.write()
        yield inventory
    finally:
        problems = made.down()
        print("\ncluster figures: " + json.dumps(FIGURES, indent=1))
        assert not problems, problems


@pytest.fixture(scope="module")
def formed(cluster):
    first = cluster.playbook("cluster.yml")
    assert first.returncode == 0, first.output[-5000:]
    FIGURES["cluster.yml first run (s)"] = round(first.seconds, 1)
    second = cluster.playbook("cluster.yml")
    FIGURES["cluster.yml second run (s)"] = round(second.seconds, 1)
    return cluster, first, second


def test_cluster_playbook_forms_the_swarm(formed):
    cluster, first, _ = formed
    assert first.changed > 0
    nodes = cluster.swarm_nodes()
    n1, n2 = cluster.nodes["n1"].address, cluster.nodes["n2"].address
    # n1 is seen under its advertise address or 0.0.0.0 (a manager's own view)
    roles = {addr: attrs["Spec"]["Role"] for addr, attrs in nodes.items()}
    assert sorted(roles.values()) == ["manager", "worker"], roles
    assert roles[n2] == "worker"
    assert n1 in roles or "0.0.0.0" in roles
    assert nodes[n2]["Spec"]["Labels"] == LABELS["n2"]
    assert nodes[n2]["Status"]["State"] == "ready"
    # n3, not in the inventory yet, was never asked to join (swarm-add-worker.yml adds it)
    assert (
        cluster.nodes["n3"].docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        == "inactive"
    )


def test_second_run_changes_nothing(formed):
    _, _, second = formed
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed == 0, second.changed_tasks()


def test_labels_follow_the_inventory_and_foreign_labels_stay(formed):
    cluster, _, _ = formed
    n2 = cluster.node_id("n2")
    cluster.manager(
        "node", "update", "--label-add", "site.rack=b4", "--label-add", "havre.stale=1", n2
    )
    cluster.labels["n2"] = {"havre.data.diabetes": "true"}
    cluster.write()
    try:
        run = cluster.playbook("cluster.yml", "--tags", "swarm")
        assert run.returncode == 0, run.output[-4000:]
        labels = json.loads(
            cluster.manager("node", "inspect", "--format", "{{json .Spec.Labels}}", n2).stdout
        )
        # the inventory's label kept, the dropped one and the stale havre.* one removed; a label
        # of another prefix (someone else's) left alone
        assert labels == {"havre.data.diabetes": "true", "site.rack": "b4"}
        assert (
            "--label-rm havre.data.cardio" in run.output and "--label-rm havre.stale" in run.output
        )
    finally:
        cluster.labels["n2"] = dict(LABELS["n2"])
        cluster.write()
        cluster.manager("node", "update", "--label-rm", "site.rack", n2)
        assert cluster.playbook("cluster.yml", "--tags", "swarm").returncode == 0


def _connects(node: engines.Node | None, address: str, port: int) -> bool:
    """A TCP connection to address:port from the host (node None) or from a node's namespace."""
    if node is None:
        try:
            with socket.create_connection((address, port), timeout=3):
                return True
        except OSError:
            return False
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    done = node.nsenter(str(REPO / ".venv/bin/python"), "-c", code, check=False)
    return done.returncode == 0


def _drop_counter(node: engines.Node, proto: str) -> int:
    rules = node.nsenter("iptables", "-v", "-x", "-n", "-L", "HAVRE-INPUT").stdout
    for line in rules.splitlines():
        fields = line.split()
        # -n shows the protocol by number (6 tcp, 17 udp)
        if "swarm from elsewhere" in line and fields[3] in (
            proto,
            {"tcp": "6", "udp": "17"}[proto],
        ):
            return int(fields[0])
    raise AssertionError(f"no {proto} drop rule in:\n{rules}")


def test_swarm_ports_are_open_to_cluster_hosts_only(formed):
    """Attack: the host (198.18.x.1 on the test bridge, not a cluster host) opens the manager's
    control and gossip ports. Controls: a worker (a cluster host) opens them, and so does the
    host once the rules are removed (so it is the firewall, not the route, that stops it)."""
    cluster, _, _ = formed
    manager, worker = cluster.nodes["n1"], cluster.nodes["n2"]
    script = cluster.host_vars("n1")["havre_firewall_script"]
    rules = manager.nsenter("iptables", "-S", "HAVRE-INPUT").stdout
    assert f"-s {worker.address}/32 -p tcp -m multiport --dports 2377,7946" in rules
    assert f"-s {worker.address}/32 -p udp -m multiport --dports 7946,4789" in rules
    assert f"-s {worker.address}/32 -p esp" in rules
    table = []
    for port in (2377, 7946):
        from_peer = _connects(worker, manager.address, port)
        from_host = _connects(None, manager.address, port)
        table.append((f"{port}/tcp", "worker n2: " + str(from_peer), "host: " + str(from_host)))
        assert from_peer, f"control: the worker can't open {port} on the manager"
        assert not from_host, f"the host (not a cluster host) opened {port} on the manager"
    # UDP (gossip, VXLAN): no answer to see; the drop rule counts the host's datagrams
    before = _drop_counter(manager, "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for port in (7946, 4789):
            udp.sendto(b"not vxlan", (manager.address, port))
    time.sleep(0.2)  # the datagrams cross a veth; the counter is read, not awaited on a clock
    dropped = _drop_counter(manager, "udp") - before
    table.append(("7946/udp, 4789/udp", "-", f"host datagrams dropped: {dropped}"))
    assert dropped >= 2
    manager.nsenter(script, "remove")
    try:
        opened = {port: _connects(None, manager.address, port) for port in (2377, 7946)}
        table.append(("control: rules removed", "-", f"host opens {opened}"))
        assert all(opened.values()), opened
    finally:
        assert manager.nsenter(script, "apply").stdout.strip() == "changed"
    assert not _connects(None, manager.address, 2377)
    FIGURES["swarm port probes"] = table
    # the swarm still works through the rules: the worker is ready
    assert cluster.swarm_nodes()[worker.address]["Status"]["State"] == "ready"


def test_add_worker_refuses_a_host_not_in_the_inventory(formed):
    cluster, _, _ = formed
    run = cluster.playbook("swarm-add-worker.yml", extra={"havre_swarm_new_worker": "n9"})
    assert run.returncode != 0
    assert "is not in the\ninventory's havre_workers group" in run.output or (
        "is not in the inventory's havre_workers group" in " ".join(run.output.split())
    ), run.output[-2000:]


@pytest.fixture(scope="module")
def three_nodes(formed):
    cluster, _, _ = formed
    cluster.workers = ["n2", "n3"]
    cluster.write()
    run = cluster.playbook("swarm-add-worker.yml", extra={"havre_swarm_new_worker": "n3"})
    assert run.returncode == 0, run.output[-5000:]
    FIGURES["swarm-add-worker.yml (s)"] = round(run.seconds, 1)
    return cluster, run


def test_add_worker_joins_labels_and_opens_the_firewall_to_it(three_nodes):
    cluster, run = three_nodes
    n3 = cluster.nodes["n3"]
    nodes = cluster.swarm_nodes()
    assert nodes[n3.address]["Spec"]["Role"] == "worker"
    assert nodes[n3.address]["Spec"]["Labels"] == LABELS["n3"]
    assert nodes[n3.address]["Status"]["State"] == "ready"
    # every cluster host's firewall admits the new address (and the new host its peers)
    for name in ("n1", "n2", "n3"):
        rules = cluster.nodes[name].nsenter("iptables", "-S", "HAVRE-INPUT").stdout
        assert f"-s {n3.address}/32 -p tcp" in rules, name
    assert _connects(n3, cluster.nodes["n1"].address, 2377)
    # the other worker only had its firewall rules rewritten (n3's address): not rejoined,
    # not relabelled
    n2_changes = [task for task in run.changed_tasks() if "changed: [n2]" in task]
    assert n2_changes and all("havre_firewall" in task for task in n2_changes), n2_changes
    assert '"n2: ' not in run.output


def _service(cluster: ClusterInventory, name: str, project: str) -> None:
    cluster.manager(
        "service", "create", "--detach", "--no-resolve-image", "--name", name,
        "--constraint", f"node.labels.havre.data.{project}==true",
        "--label", "havre.test=cluster", SMALL_IMAGE, "sleep", "infinity",
    )  # fmt: skip


def _running_on(cluster: ClusterInventory, service: str, deadline: float = 90) -> str:
    """The address of the node running the service's one task, once it runs."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        tasks = cluster.manager(
            "service", "ps", "--filter", "desired-state=running", "--format",
            "{{.Node}}|{{.CurrentState}}|{{.ID}}", service,
        ).stdout.splitlines()  # fmt: skip
        for task in tasks:
            _node, state, task_id = task.split("|")
            if state.startswith("Running"):
                node_id = cluster.manager(
                    "inspect", "--format", "{{.NodeID}}", task_id
                ).stdout.strip()
                addr = cluster.manager("node", "inspect", "--format", "{{.Status.Addr}}", node_id)
                return addr.stdout.strip()
        time.sleep(0.5)
    return ""


def test_drain_moves_a_server_to_another_node_with_its_data_or_stops_it(three_nodes):
    cluster, _ = three_nodes
    n2, n3 = cluster.nodes["n2"].address, cluster.nodes["n3"].address
    cardio, diabetes = "tc-cardio-" + secrets.token_hex(2), "tc-diabetes-" + secrets.token_hex(2)
    try:
        # cardio's server starts on n2 (n3 paused meanwhile); Swarm doesn't move running tasks
        cluster.manager("node", "update", "--availability", "pause", cluster.node_id("n3"))
        _service(cluster, cardio, "cardio")  # data on n2 and n3
        _service(cluster, diabetes, "diabetes")  # data on n2 only
        assert _running_on(cluster, cardio) == n2
        assert _running_on(cluster, diabetes) == n2
        cluster.manager("node", "update", "--availability", "active", cluster.node_id("n3"))
        started = time.monotonic()
        run = cluster.playbook("swarm-drain.yml", extra={"havre_swarm_drain": "n2"})
        assert run.returncode == 0, run.output[-4000:]
        FIGURES["swarm-drain.yml (s)"] = round(time.monotonic() - started, 1)
        # nothing runs on n2; cardio moved to n3 (its data is there); diabetes has nowhere to go
        left = cluster.manager("node", "ps", "--filter", "desired-state=running", "--quiet",
                               cluster.node_id("n2")).stdout.split()  # fmt: skip
        assert left == []
        assert _running_on(cluster, cardio) == n3
        assert _running_on(cluster, diabetes, deadline=3) == ""
        states = cluster.manager("service", "ps", "--filter", "desired-state=running",
                                 "--format", "{{.CurrentState}}", diabetes).stdout  # fmt: skip
        assert "Pending" in states, states
        again = cluster.playbook("swarm-drain.yml", extra={"havre_swarm_drain": "n2"})
        assert again.returncode == 0 and again.changed == 0, again.changed_tasks()
        # control: back to active, the diabetes server starts again on the node with its data
        cluster.manager("node", "update", "--availability", "active", cluster.node_id("n2"))
        assert _running_on(cluster, diabetes) == n2
    finally:
        for service in (cardio, diabetes):
            cluster.manager("service", "rm", service, check=False)


def test_drain_and_leave_takes_the_worker_out(three_nodes):
    cluster, _ = three_nodes
    n3 = cluster.nodes["n3"]
    run = cluster.playbook(
        "swarm-drain.yml", extra={"havre_swarm_drain": "n3", "havre_swarm_drain_leave": True}
    )
    assert run.returncode == 0, run.output[-4000:]
    assert n3.address not in cluster.swarm_nodes()
    assert n3.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "inactive"
    bad = cluster.playbook("swarm-drain.yml", extra={"havre_swarm_drain": "n1"})
    assert bad.returncode != 0 and "is not in the inventory's havre_workers group" in " ".join(
        bad.output.split()
    )
