"""The three-engine test cluster and the enclave deployed on it, once per pytest session.

``test_cluster`` builds it (``tests/cluster/engines.py``): node 1 the swarm manager, nodes 2
and 3 workers, and removes everything at the end. It skips only when the machine lacks a
capability (root, network namespaces, iptables, dockerd); that skip is not on the CI allow-list
(``tests/skip_policy.py``, ``NEVER_ALLOWED``), so a CI run without a cluster fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from havre.enclave.config import EnclaveConfig, load_enclave_config
from havre.enclave.config.cluster import INSECURE_TEST_FLAG
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.layout import StackOptions
from tests.cluster import engines
from tests.cluster.deploy import PLAYBOOK, VISITS, Run, Site
from tests.integration.hub_client import HubUser

#: the images the enclave runs; a developer's own build (images/build.sh tags the shared ones,
#: which another build may re-tag meanwhile) may be named instead
HUB_IMAGE = os.environ.get("HAVRE_TEST_HUB_IMAGE") or StackOptions().hub_image
EGRESS_IMAGE = os.environ.get("HAVRE_TEST_EGRESS_IMAGE") or StackOptions().egress_image

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


#: workers holding each project's data (the labels cluster.yml sets from the inventory)
DATA_LABELS = {"cardio": 2, "diabetes": 3}
#: what the session's deployment took (printed at the end)
FIGURES: dict[str, float] = {}


@dataclass
class ClusterEnclave:
    """The enclave running on the test cluster from one config (site.yml's)."""

    cluster: engines.Cluster
    config: EnclaveConfig
    url: str
    passwords: dict[str, str]
    options: StackOptions

    def user(self, name: str) -> HubUser:
        user = HubUser(self.url, name, self.passwords[name])
        user.session.trust_env = False
        return user.login()

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


@pytest.fixture(scope="session")
def cluster_site(test_cluster, tmp_path_factory) -> Iterator[tuple[Site, Run]]:
    """The enclave deployed on the session's test cluster as an operator deploys one:
    ``cluster.yml --tags swarm`` (the node labels from the inventory; the harness formed the
    swarm), then ``site.yml`` (the enclave on the manager, the notebook image streamed into
    the workers, the data folders on the labelled workers). Only the manager's engine has
    Havre's images at the start. What the playbooks alone do to a swarm (forming it, the
    firewall, adding and draining workers) is tests/ansible/test_cluster.py's."""
    if not PLAYBOOK.exists():
        pytest.fail("needs ansible-core in the venv (pip install -e '.[dev]')")
    for image in (HUB_IMAGE, EGRESS_IMAGE, DEFAULT_NOTEBOOK_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            pytest.fail(f"image {image} is missing: build it with `bash images/build.sh`")
    root = Path(tmp_path_factory.mktemp("cluster-site"))
    site = Site(test_cluster, root, HUB_IMAGE, EGRESS_IMAGE)
    os.environ[INSECURE_TEST_FLAG] = "1"  # this process reads the rendered config too
    try:
        started = time.monotonic()
        test_cluster.load_images(
            [HUB_IMAGE, EGRESS_IMAGE, DEFAULT_NOTEBOOK_IMAGE], [test_cluster.manager]
        )
        FIGURES["images into the manager (s)"] = round(time.monotonic() - started, 1)
        # the operator's data, already on the host before the enclave (mode as it came)
        cardio = site.state / "projects" / "cardio" / "data"
        cardio.mkdir(parents=True)
        (cardio / "visits.csv").write_text(VISITS)
        (cardio / "visits.csv").chmod(0o666)
        swarm = site.playbook("cluster.yml", "--tags", "swarm")
        assert swarm.returncode == 0, swarm.output[-4000:]
        FIGURES["cluster.yml --tags swarm (s)"] = round(swarm.seconds, 1)
        # the test cluster's engines are the harness's dockerd's and its firewall is the
        # netns's: the docker and firewall roles are proven by tests/ansible/test_cluster.py
        deploy = site.playbook("site.yml", "--skip-tags", "docker,firewall")
        FIGURES["site.yml (s)"] = round(deploy.seconds, 1)
        assert deploy.returncode == 0, deploy.output[-6000:]
        yield site, deploy
    finally:
        os.environ.pop(INSECURE_TEST_FLAG, None)
        print(f"\ncluster deploy figures: {FIGURES}")
        # the enclave's containers and services go with the test cluster's engines
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_enclave(cluster_site) -> ClusterEnclave:
    """The enclave site.yml runs on the test cluster (``havre up`` on the manager from the
    one config it rendered), notebook servers as Swarm services on workers."""
    site, _deploy = cluster_site
    config = load_enclave_config(Path(site.enclave_vars["havre_config_dir"]) / "enclave.yaml")
    manager = site.nodes["n1"]
    return ClusterEnclave(
        site.cluster,
        config,
        site.url,
        site.passwords,
        StackOptions(bind_ip=manager.address, port=8000, idp_port=8001),
    )


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
