"""The three-engine test cluster, once per pytest session, for the tests marked ``cluster``.

``test_cluster`` builds it (``tests/cluster/engines.py``): node 1 the swarm manager, nodes 2
and 3 workers, and removes everything at the end. It skips only when the machine lacks a
capability (root, network namespaces, iptables, dockerd); that skip is not on the CI allow-list
(``tests/skip_policy.py``, ``NEVER_ALLOWED``), so a CI run without a cluster fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from havre.enclave.config import EnclaveConfig, load_enclave_config
from havre.enclave.config.cluster import INSECURE_TEST_FLAG
from havre.host import stack
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.demo import init_demo
from havre.host.layout import StackOptions
from tests.cluster import engines
from tests.integration.hub_client import HubUser

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
        started = time.monotonic()
        left = cluster.down()
        print(f"\nthe test cluster was removed in {time.monotonic() - started:.1f} s")
        assert not left, f"the test cluster left things behind: {left}"


#: workers holding each demo project's data (the labels Ansible sets on a real cluster)
DATA_LABELS = {"cardio": 2, "diabetes": 3}


@dataclass
class ClusterEnclave:
    """The demo enclave running on the test cluster from one config."""

    cluster: engines.Cluster
    config: EnclaveConfig
    url: str
    passwords: dict[str, str]
    options: StackOptions

    def user(self, name: str) -> HubUser:
        return HubUser(self.url, name, self.passwords[name]).login()

    def node_of(self, username: str, project: str) -> engines.Node | None:
        """The engine whose worker runs this user's server (from the swarm's task list)."""
        name = self.config.container_name(project, username)
        tasks = self.cluster.manager.docker(
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.ID}}",
            name,
            check=False,
        ).stdout.split()
        if not tasks:
            return None
        node_id = self.cluster.manager.docker(
            "inspect", "--format", "{{.NodeID}}", tasks[0]
        ).stdout.strip()
        ids = self.cluster.node_ids()
        return next((n for n in self.cluster.nodes if ids[n.name] == node_id), None)

    def diagnose(self, username: str, project: str, answer: str = "") -> str:
        """What a failed start left: the hub's answer, Swarm's tasks, the broker's audit."""
        name = self.config.container_name(project, username)
        tasks = self.cluster.manager.docker("service", "ps", "--no-trunc", name, check=False)
        audit = self.config.state_dir / "broker" / "audit.jsonl"
        tail = audit.read_text()[-1500:] if audit.exists() else "(no broker audit)"
        return f"{answer[:500]}\n{tasks.stdout}{tasks.stderr}\n{tail}"

    def server_container(self, username: str, project: str) -> tuple[engines.Node, str] | None:
        """(engine, container id) of this user's running server."""
        node = self.node_of(username, project)
        if node is None:
            return None
        found = node.docker(
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.swarm.service.name={self.config.container_name(project, username)}",
        ).stdout.split()
        return (node, found[0]) if found else None


def havre_cli(cluster: engines.Cluster, *args: str) -> subprocess.CompletedProcess:
    """``havre`` run as an operator runs it on the manager host: in the manager's network
    namespace, with the test cluster's flag."""
    return subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{cluster.manager.name}",
            "env",
            f"{INSECURE_TEST_FLAG}=1",
            sys.executable,
            "-m",
            "havre.host.cli",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def cluster_enclave(test_cluster, tmp_path_factory) -> Iterator[ClusterEnclave]:
    """The demo enclave on the test cluster: ``havre up`` on the manager from one config
    (the demo's, plus a ``cluster`` section), notebook servers as Swarm services on workers."""
    # the images under their usual names in the cluster's engines; a developer's own build
    # (images/build.sh tags the shared ones) may be named instead and is tagged there
    wanted = {
        StackOptions().hub_image: os.environ.get("HAVRE_TEST_HUB_IMAGE", ""),
        StackOptions().egress_image: os.environ.get("HAVRE_TEST_EGRESS_IMAGE", ""),
        DEFAULT_NOTEBOOK_IMAGE: "",
    }
    jobs = []
    for name, own in wanted.items():
        image = own or name
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            pytest.fail(f"image {image} is missing: build it with `bash images/build.sh`")
        nodes = test_cluster.workers if name == DEFAULT_NOTEBOOK_IMAGE else [test_cluster.manager]
        jobs.append((name, own, image, nodes))
    # the manager's images and the workers' at the same time
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for _ in pool.map(lambda job: test_cluster.load_images([job[2]], job[3]), jobs):
            pass
    for name, own, _image, nodes in jobs:
        for node in nodes if own else ():
            node.docker("tag", own, name)
    for slug, index in DATA_LABELS.items():
        test_cluster.label_node(test_cluster.nodes[index - 1], **{f"havre.data.{slug}": "true"})
    state = tmp_path_factory.mktemp("cluster-enclave")
    os.environ[INSECURE_TEST_FLAG] = "1"  # this process reads the config too
    name = f"sw{os.getpid() % 100000}"
    config, users = init_demo(
        state, DEFAULT_NOTEBOOK_IMAGE, enclave_name=name, membership_check_seconds=5
    )
    config_path = Path(config.source)
    demo = yaml.safe_load(config_path.read_text())
    # pixels-only projects run on one host only: the config refuses them on a cluster
    demo["projects"] = {
        slug: project
        for slug, project in demo["projects"].items()
        if (project or {}).get("access") != "desktop"
    }
    config_path.write_text(
        yaml.safe_dump(demo, sort_keys=False)
        + CLUSTER_SECTION.format(manager=test_cluster.manager.url)
    )
    config = load_enclave_config(config_path)
    address = test_cluster.manager.address
    done = havre_cli(
        test_cluster,
        "up",
        "--config",
        str(config_path),
        "--bind",
        address,
        "--port",
        "8000",
        "--idp-port",
        "8001",
    )
    running = ClusterEnclave(
        test_cluster,
        config,
        f"http://{address}:8000/",
        {u.name: u.password for u in users},
        StackOptions(bind_ip=address, port=8000, idp_port=8001),
    )
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        yield running
    finally:
        started = time.monotonic()
        stack.down(config, purge=True)
        os.environ.pop(INSECURE_TEST_FLAG, None)
        print(f"\nthe cluster enclave stopped in {time.monotonic() - started:.1f} s")


#: what the demo config gets to run on the test cluster (the one config `havre up` reads)
CLUSTER_SECTION = """
cluster:
  engine: swarm
  manager: {manager}
  # the test cluster's kernel has no IPsec: refused without HAVRE_INSECURE_TEST_CLUSTER=1
  insecure_test_unencrypted_overlay: true
"""


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the isolation probes across hosts and the hardening seen inside a server on a
    worker, each against its control."""
    from tests.cluster.test_swarm_servers import HARDENING_TABLE, PROBE_TABLE

    write = terminalreporter.write_line
    if PROBE_TABLE:
        terminalreporter.section("isolation probes across hosts (issue #18)")
        write(f"{'target':<40} {'from a server on worker 2':<36} control")
        for target, attack, control in PROBE_TABLE:
            write(f"{target:<40} {attack.removeprefix('OSError: '):<36} {control}")
    if not HARDENING_TABLE:
        return
    terminalreporter.section("hardening inside a Swarm server on a worker (issue #18)")
    write = terminalreporter.write_line
    write(f"{'probe':<34} {'control: plain container':<26} server (Swarm service)")
    for probe, control, server in HARDENING_TABLE:
        write(f"{probe:<34} {control:<26} {server}")
