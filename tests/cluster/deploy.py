"""The test cluster's enclave as an operator deploys it: ``cluster.yml`` then ``site.yml``.

Each engine of the test cluster (``tests/cluster/engines.py``) is an inventory host reached with
the local connection whose commands run inside its namespace (``ansible_shell_executable``:
:meth:`~tests.cluster.engines.Node.shell_wrapper`) and whose Docker commands go to its own
engine (``havre_docker_url``). ``cluster.yml`` (its swarm part) labels the workers from the
inventory (n2 holds cardio's data, n3 diabetes's; no worker onco's), then ``site.yml`` deploys
the enclave on the manager with the config's ``cluster`` section (the test cluster's
unencrypted overlay: the test variable, and ``HAVRE_INSECURE_TEST_CLUSTER=1`` in
ansible-playbook's environment), streams the notebook image into each worker's engine, and
creates each project's data folder on the worker labelled for it.

The cluster's state folder is on this machine's disk, which the three "hosts" share: the
shared file system ``havre_cluster_shared_state`` names. Used by ``tests/cluster/conftest.py``
(one deployment per session, which every test of ``tests/cluster`` uses).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from havre.enclave.config.cluster import INSECURE_TEST_FLAG
from tests.cluster import engines

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
#: the workers holding each project's data (node labels set by cluster.yml from the inventory);
#: onco's data is on no worker (the refusal test labels one)
HOLDS = {"n2": "cardio", "n3": "diabetes"}
#: the operator's file in cardio's data folder
VISITS = "visit_id,days\n1,3\n2,5\n"
#: users of the embedded identity provider and their projects' groups
USERS = {"alice": ["p-cardio"], "bob": ["p-diabetes"], "carol": ["p-onco"]}


RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Run:
    """One ansible-playbook run."""

    returncode: int
    output: str
    seconds: float

    def recaps(self) -> dict[str, tuple[int, ...]]:
        found = {}
        for line in self.output.splitlines():
            match = RECAP.match(line)
            if match:
                found[line.split()[0]] = tuple(int(g) for g in match.groups())
        return found

    @property
    def changed(self) -> int:
        recaps = self.recaps()
        assert recaps, f"no PLAY RECAP in:\n{self.output[-3000:]}"
        return sum(r[1] for r in recaps.values())

    def changed_tasks(self) -> list[str]:
        found, task = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.strip("* ")
            elif line.startswith("changed:"):
                found.append(f"{task} {line.strip()}")
        return found


class Site:
    """The test cluster's inventory and playbook runs."""

    def __init__(
        self, cluster: engines.Cluster, root: Path, hub_image: str, egress_image: str
    ) -> None:
        self.cluster = cluster
        self.root = root
        self.nodes = {node.name.rsplit("-", 1)[1]: node for node in cluster.nodes}
        self.shared = root / "shared"
        self.state = self.shared / "state"
        self.diabetes_data = root / "data" / "diabetes"  # outside the state folder
        self.passwords = {name: secrets.token_urlsafe(12) for name in USERS}
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
            "havre_hub_image": hub_image,
            "havre_egress_image": egress_image,
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
                # the membership test waits for it
                "membership_check_seconds": 5,
            },
            "havre_idp_users": [
                {"name": name, "password": self.passwords[name], "groups": groups}
                for name, groups in USERS.items()
            ],
            "havre_projects": {
                "cardio": {"title": "Cardio", "groups": ["p-cardio"]},
                "diabetes": {
                    "title": "Diabetes",
                    "groups": ["p-diabetes"],
                    "data_path": str(self.diabetes_data),
                    "placement": "havre.data.diabetes=true",
                },
                "onco": {"title": "Onco", "groups": ["p-onco"]},
            },
        }
        self.inventory = root / "inventory" / "hosts.yml"
        self.inventory.parent.mkdir(parents=True)
        for name, node in self.nodes.items():
            node.shell_wrapper(root / name / "sh")
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
