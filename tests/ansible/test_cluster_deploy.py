"""The demo enclave deployed on the test cluster with the playbooks: cluster.yml, then site.yml.

The test cluster (``tests/cluster/engines.py``) is three engines, each in its own network
namespace: n1 the swarm manager, n2 and n3 workers. Each is an inventory host reached with the
local connection whose commands run inside its namespace (``ansible_shell_executable``: a
wrapper entering it with ``nsenter --net``) and whose Docker commands go to its own engine
(``havre_docker_url``). Only the manager's engine has Havre's images at the start.

``cluster.yml`` (its swarm part) labels the workers from the inventory (n2 holds cardio's data,
n3 diabetes's), then ``site.yml`` deploys the enclave on the manager with the config's
``cluster`` section (the test cluster's unencrypted overlay: the test variable, and
``HAVRE_INSECURE_TEST_CLUSTER=1`` in ansible-playbook's environment), streams the notebook
image into each worker's engine (not the hub's or the egress service's), and creates each
project's data folder on the worker labelled for it, with the project's group. Then alice's
server lands on n2, becomes ready through the hub and proxy on the manager, and code in its
kernel reads the file the operator put in ``/data``; bob's diabetes server lands on n3 (the
control: the label, not chance, decides).

The cluster's state folder is on this machine's disk, which the three "hosts" share: the
shared file system ``havre_cluster_shared_state`` names.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from havre.enclave.config import load_enclave_config
from havre.enclave.config.cluster import INSECURE_TEST_FLAG
from havre.enclave.identities import load_table_any, table_path
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.layout import StackOptions
from tests.ansible.test_cluster import Run
from tests.cluster import engines
from tests.cluster.conftest import ClusterEnclave

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
HUB_IMAGE, EGRESS_IMAGE = StackOptions().hub_image, StackOptions().egress_image
#: the workers holding each project's data (node labels set by cluster.yml from the inventory)
HOLDS = {"n2": "cardio", "n3": "diabetes"}
VISITS = "visit_id,days\n1,3\n2,5\n"
FIGURES: dict[str, object] = {}


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, Docker engines)"
    if not PLAYBOOK.exists():
        return "needs ansible-core in the venv (pip install -e '.[dev]')"
    lacking = engines.missing_capability()
    if lacking:
        return lacking
    for image in (HUB_IMAGE, EGRESS_IMAGE, DEFAULT_NOTEBOOK_IMAGE):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            return f"needs image {image}: build it with `bash images/build.sh`"
    return None


class Site:
    """The test cluster's inventory and playbook runs."""

    def __init__(self, cluster: engines.Cluster, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.nodes = {node.name.rsplit("-", 1)[1]: node for node in cluster.nodes}
        self.shared = root / "shared"
        self.state = self.shared / "state"
        self.diabetes_data = root / "data" / "diabetes"  # outside the state folder
        self.passwords = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
        self.enclave = "cd" + secrets.token_hex(3)
        manager = self.nodes["n1"]
        self.url = f"http://{manager.address}:8000/"
        self.enclave_vars = {
            "havre_enclave_name": self.enclave,
            "havre_state_dir": str(self.state),
            "havre_cluster_shared_state": str(self.shared),
            "havre_config_dir": str(root / "etc"),
            "havre_source_dir": str(REPO),
            "havre_venv_dir": str(REPO / ".venv"),
            "havre_images_mode": "present",  # on the manager; the workers get them from it
            "havre_bind_address": manager.address,
            "havre_public_host": manager.address,
            "havre_port": 8000,
            "havre_idp_port": 8001,
            "havre_tls_mode": "none",
            "havre_test_cluster_insecure_unencrypted_overlay": True,
            "havre_identity": {
                "provider": "embedded",
                "checker_groups": ["output-checkers"],
                "admin_groups": ["havre-admins"],
            },
            "havre_idp_users": [
                {"name": "alice", "password": self.passwords["alice"], "groups": ["p-cardio"]},
                {"name": "bob", "password": self.passwords["bob"], "groups": ["p-diabetes"]},
            ],
            "havre_projects": {
                "cardio": {"title": "Cardio", "groups": ["p-cardio"]},
                "diabetes": {
                    "title": "Diabetes",
                    "groups": ["p-diabetes"],
                    "data_path": str(self.diabetes_data),
                    "placement": "havre.data.diabetes=true",
                },
            },
        }
        self.inventory = root / "inventory" / "hosts.yml"
        self.inventory.parent.mkdir(parents=True)
        for name, node in self.nodes.items():
            wrapper = root / name / "sh"
            wrapper.parent.mkdir()
            wrapper.write_text(
                f'#!/bin/sh\nexec nsenter --net=/var/run/netns/{node.name} /bin/sh "$@"\n'
            )
            wrapper.chmod(0o755)
        self.inventory.write_text(yaml.safe_dump(self._inventory()))
        # extra variables (-e @file), as the other Ansible tests pass theirs: variables written
        # inline in an inventory rank below the playbook's group_vars/all.yml defaults
        self.vars_file = root / "vars.yml"
        self.vars_file.write_text(yaml.safe_dump(self.enclave_vars))
        self.vars_file.chmod(0o600)

    def _host(self, name: str) -> dict:
        node = self.nodes[name]
        labels = {f"havre.data.{HOLDS[name]}": "true"} if name in HOLDS else {}
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
            "ansible_shell_executable": str(self.root / name / "sh"),
            "havre_docker_url": node.url,
            "havre_swarm_advertise_addr": node.address,
            "havre_swarm_node_labels": labels,
        }

    def _inventory(self) -> dict:
        return {
            "havre_cluster": {
                "children": {
                    "havre_managers": {"hosts": {"n1": self._host("n1")}},
                    "havre_workers": {"hosts": {n: self._host(n) for n in ("n2", "n3")}},
                },
                "vars": {
                    "havre_enclave_name": self.enclave,
                    "havre_swarm_default_addr_pool": (
                        f"10.{engines.OVERLAY_POOL_SECOND_OCTET}.0.0/16"
                    ),
                },
            },
            "havre": {"hosts": {"n1": None}, "vars": self.enclave_vars},
        }

    def playbook(self, name: str, *args: str) -> Run:
        started = time.monotonic()
        done = subprocess.run(
            [str(PLAYBOOK), "-i", str(self.inventory), "-e", f"@{self.vars_file}", name, *args],
            cwd=ANSIBLE,
            capture_output=True,
            text=True,
            timeout=900,
            env={
                **os.environ,
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                # the test cluster's kernel has no IPsec: the one run allowed the test variable
                INSECURE_TEST_FLAG: "1",
            },
        )
        return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)

    def image_id(self, name: str, image: str) -> str | None:
        found = self.nodes[name].docker(
            "image", "inspect", "--format", "{{.Id}}", image, check=False
        )
        return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    lacking = _missing()
    if lacking:
        pytest.skip(lacking)
    cluster = engines.up("cd" + secrets.token_hex(2), nodes=3)
    root = Path(tmp_path_factory.mktemp("cluster-deploy"))
    site = Site(cluster, root)
    os.environ[INSECURE_TEST_FLAG] = "1"  # this process reads the rendered config too
    try:
        started = time.monotonic()
        cluster.load_images([HUB_IMAGE, EGRESS_IMAGE, DEFAULT_NOTEBOOK_IMAGE], [cluster.manager])
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
        problems = cluster.down()  # the engines, their data roots, containers and services
        shutil.rmtree(root, ignore_errors=True)
        print("\ncluster deploy figures: " + json.dumps(FIGURES, indent=1))
        assert not problems, problems


def test_site_yml_renders_the_cluster_section_and_loads_the_notebook_image_on_workers(deployed):
    site, deploy = deployed
    config = load_enclave_config(Path(site.enclave_vars["havre_config_dir"]) / "enclave.yaml")
    assert config.cluster is not None
    assert config.cluster.manager == site.nodes["n1"].url
    assert config.cluster.placement == {"diabetes": "havre.data.diabetes=true"}
    assert not config.cluster.overlay_encrypted  # the test cluster's, with the flag
    notebook = site.image_id("n1", DEFAULT_NOTEBOOK_IMAGE)
    for worker in ("n2", "n3"):
        assert site.image_id(worker, DEFAULT_NOTEBOOK_IMAGE) == notebook, worker
        # the hub and egress images stay on the manager (control: there they are)
        assert site.image_id(worker, HUB_IMAGE) is None
        assert site.image_id(worker, EGRESS_IMAGE) is None
    assert site.image_id("n1", HUB_IMAGE) and site.image_id("n1", EGRESS_IMAGE)
    loaded = [line for line in deploy.changed_tasks() if "Load the notebook images" in line]
    assert len(loaded) == 2, loaded  # one per worker, reported as a change


def test_data_folders_on_the_labelled_workers_have_the_projects_group(deployed):
    """The folders after the whole site.yml. The three "hosts" share this machine's disk, so
    which host made a folder can't be told apart here: that the worker play makes exactly its
    projects' folders is tests/unit/test_ansible_cluster_site.py's."""
    site, deploy = deployed
    assert "Create the data folders of the projects this worker holds" in deploy.output
    gids = load_table_any(table_path(site.state)).projects
    cardio = site.state / "projects" / "cardio" / "data"
    for path, gid, mode in (
        (cardio, gids["cardio"], 0o750),
        (cardio / "visits.csv", gids["cardio"], 0o640),
        (site.diabetes_data, gids["diabetes"], 0o750),
    ):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, mode), path


def test_a_members_server_lands_on_the_labelled_worker_and_reads_data(deployed):
    site, _deploy = deployed
    config = load_enclave_config(Path(site.enclave_vars["havre_config_dir"]) / "enclave.yaml")
    manager = site.nodes["n1"]
    running = ClusterEnclave(
        site.cluster,
        config,
        site.url,
        site.passwords,
        StackOptions(bind_ip=manager.address, port=8000, idp_port=8001),
    )
    alice = running.user("alice")
    alice.session.trust_env = False
    answer = alice.start_server("cardio")
    assert answer.status_code in (201, 202), running.diagnose("alice", "cardio", answer.text)
    alice.wait_ready("cardio")
    node = running.node_of("alice", "cardio")
    assert node is not None and node.name.endswith("-n2"), node  # cardio's worker
    out = alice.run_code("cardio", "print(open('/data/visits.csv').read(), end='')\n")
    assert out["error"] is None, out
    assert out["stdout"] == VISITS
    # control: bob's diabetes server lands on the other labelled worker
    bob = running.user("bob")
    bob.session.trust_env = False
    answer = bob.start_server("diabetes")
    assert answer.status_code in (201, 202), running.diagnose("bob", "diabetes", answer.text)
    bob.wait_ready("diabetes")
    other = running.node_of("bob", "diabetes")
    assert other is not None and other.name.endswith("-n3"), other
    alice.stop_server("cardio")
    bob.stop_server("diabetes")
