"""A real move between two Docker engines, with the Ansible playbooks.

Engine A is this machine's engine; engine B is a second ``dockerd`` of the test cluster
(``tests/cluster/engines.py``): its own network namespace, data root, exec root and socket. The
enclave is deployed on A with ``site.yml``; alice gets a table released and keeps a note in her
home; ``backup.yml`` archives A, ``teardown.yml`` stops everything of it on A, and
``restore.yml`` brings the archive up on B (an inventory host whose commands run in B's
namespace and whose Docker commands go to B's socket). Then, on B: the audit log verifies with
the same head, the signed release record is byte-identical and verifies, her home note has its
owner and content, her server on B reads it, and a new event (her download) chains onto the
head from before the move; on A nothing of the enclave runs. The figures (archive size, times,
audit heads) are printed at the end and quoted in docs/sysadmin/cluster.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest
import yaml

from havre.enclave.identities import load_table_any, table_path
from havre.host import layout
from tests.ansible.test_cluster import missing_for_cluster_playbooks
from tests.ansible.test_playbooks import (
    HOME_NOTE,
    REPO,
    TABLE,
    Deployment,
    _events,
    _verify_head,
    age_keys,
    release_a_table,
)
from tests.cluster import engines
from tests.enclave_fixtures import free_port
from tests.integration.test_egress_flow import Egress

# the module's fixture builds its own test cluster (ours drains and removes nodes)
pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.timeout(1500)]

ENCLAVE = os.environ.get("HAVRE_MOVE_ENCLAVE", "havremove")
FIGURES: dict[str, object] = {}


class EngineDeployment(Deployment):
    """A deployment on one engine (``url`` None: this machine's), reached at ``address``."""

    engine: str | None = None
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.vars['havre_port']}/"

    def egress_admin(self, *args: str) -> subprocess.CompletedProcess:
        engine = ["-H", self.engine] if self.engine else []
        return subprocess.run(
            ["docker", *engine, "exec", f"{self.vars['havre_enclave_name']}-egress"]
            + ["havre-egress-admin", "--state", self.vars["havre_state_dir"], *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def user(self, name: str):
        user = super().user(name)
        user.session.trust_env = False
        return user


def _images(client: docker.DockerClient) -> dict[str, object]:
    """Private tags of today's images (another build may re-tag havre/*:VERSION meanwhile)."""
    options = layout.StackOptions()
    pinned: dict[str, object] = {}
    for var, image in (
        ("havre_hub_image", options.hub_image),
        ("havre_egress_image", options.egress_image),
        ("havre_notebook_images", "havre/notebook:0.1.0"),
    ):
        try:
            found = client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"needs image {image}: build it with `bash images/build.sh`")
        repository = f"{ENCLAVE}-pinned/{image.split('/')[-1].split(':')[0]}"
        found.tag(repository, found.id.split(":")[-1][:12])
        pinned[var] = f"{repository}:{found.id.split(':')[-1][:12]}"
    pinned["havre_notebook_images"] = [pinned["havre_notebook_images"]]
    return pinned


def _deployment(root: Path, name: str, common: dict, host_vars: dict) -> EngineDeployment:
    here = root / name
    (here / "inventory/group_vars/havre").mkdir(parents=True)
    variables = {
        **common,
        # the same path on both hosts (the archive refuses another): see the test for how the
        # two "hosts", which share this machine's disk, keep apart
        "havre_state_dir": str(root / "state"),
        "havre_config_dir": str(here / "etc"),
        "havre_backup_dir": str(here / "backups"),
        "havre_port": free_port(),
        "havre_idp_port": free_port(),
        "havre_firewall_dir": str(here / "firewall"),
        "havre_firewall_script": str(here / "sbin" / "havre-firewall"),
        "havre_firewall_unit": str(here / "systemd" / "havre-firewall.service"),
        # the Docker host role merges into this copy, never into the machine's daemon.json
        "havre_docker_host_daemon_json": str(here / "docker" / "daemon.json"),
    }
    (here / "sbin").mkdir()
    (here / "systemd").mkdir()
    projects_file = here / "inventory/group_vars/havre/projects.yml"
    projects = {"cardio": {"title": "Cardiovascular outcomes", "groups": ["project-cardio"]}}
    projects_file.write_text(yaml.safe_dump({"havre_projects": projects}))
    variables["havre_projects_file"] = str(projects_file)
    vars_file = here / "vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    vars_file.chmod(0o600)
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
        **host_vars,
    }
    inventory = here / "inventory/hosts.yml"
    inventory.write_text(yaml.safe_dump({"havre": {"hosts": {name: host}}}))
    passwords = {u["name"]: u["password"] for u in common["havre_idp_users"]}
    return EngineDeployment(here, inventory, vars_file, variables, passwords)


def _enclave_on(client: docker.DockerClient) -> list[str]:
    """What of the enclave is on an engine: containers and networks."""
    label = {"label": f"havre.enclave={ENCLAVE}"}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    return found + [f"network {n.name}" for n in client.networks.list(filters=label)]


@pytest.fixture(scope="module")
def move(tmp_path_factory):
    lacking = missing_for_cluster_playbooks()
    if lacking:
        pytest.skip(lacking)
    host_engine = docker.from_env(version="auto")
    pinned = _images(host_engine)
    root = Path(tmp_path_factory.mktemp("move"))
    passwords = {name: secrets.token_urlsafe(12) for name in ("alice", "olivia", "oscar")}
    groups = {"alice": ["project-cardio"], "olivia": ["output-checkers"]}
    groups["oscar"] = groups["olivia"]
    common = {
        "havre_enclave_name": ENCLAVE,
        "havre_source_dir": str(REPO),
        "havre_venv_dir": str(REPO / ".venv"),
        "havre_images_mode": "present",
        **pinned,
        "havre_tls_mode": "self_signed",
        "havre_identity": {
            "provider": "embedded",
            "checker_groups": ["output-checkers"],
            "admin_groups": ["havre-admins"],
        },
        "havre_idp_users": [
            {"name": n, "password": p, "groups": groups[n]} for n, p in passwords.items()
        ],
        # the archive that moves is encrypted to the operator's age key, as a site's are
        **age_keys(root),
    }
    cluster = engines.up("mv" + secrets.token_hex(2), nodes=1)
    node_b = cluster.manager
    b_client = docker.DockerClient(base_url=node_b.url, version="auto")
    a = b = None
    try:
        node_b.docker("swarm", "leave", "--force")  # a plain engine: B is just another host
        started = time.monotonic()
        images = [pinned["havre_hub_image"], pinned["havre_egress_image"]]
        cluster.load_images([*images, *pinned["havre_notebook_images"]])
        FIGURES["images loaded into B (s)"] = round(time.monotonic() - started, 1)
        a = _deployment(root, "a", common, {})
        wrapper = node_b.shell_wrapper(root / "b-sh")
        b = _deployment(
            root,
            "b",
            common,
            {
                "ansible_shell_executable": str(wrapper),
                "havre_docker_url": node_b.url,
                "havre_bind_address": node_b.address,
            },
        )
        b.engine, b.address = node_b.url, node_b.address
        deploy = a.playbook("site.yml")
        assert deploy.returncode == 0, deploy.output[-4000:]
        yield a, b, host_engine, b_client
    finally:
        for made, client in ((a, host_engine), (b, b_client)):
            if made is None:
                continue
            for container in client.containers.list(
                all=True, filters={"label": f"havre.enclave={ENCLAVE}"}
            ):
                container.remove(force=True)
            for network in client.networks.list(filters={"label": f"havre.enclave={ENCLAVE}"}):
                network.remove()
            script = Path(made.vars["havre_firewall_script"])
            if made is a and script.exists():
                subprocess.run([str(script), "remove"], capture_output=True, timeout=60)
        b_client.close()
        problems = cluster.down()
        shutil.rmtree(root, ignore_errors=True)
        for tag in (pinned["havre_hub_image"], pinned["havre_egress_image"]):
            try:
                host_engine.images.remove(tag, noprune=True)
            except docker.errors.APIError:
                pass
        try:
            host_engine.images.remove(pinned["havre_notebook_images"][0], noprune=True)
        except docker.errors.APIError:
            pass
        host_engine.close()
        print("\nmove figures: " + json.dumps(FIGURES, indent=1))
        assert not problems, problems


def test_move_from_one_engine_to_another(move):
    a, b, host_engine, b_client = move
    alice, rid, file_id = release_a_table(a)
    alice.stop_server("cardio")
    seq, head = _verify_head(a)
    record_before = a.egress_admin("release-record", rid)
    assert record_before.returncode == 0, record_before.stderr
    events_before = _events(a)
    FIGURES["audit head before"] = f"event {seq} {head}"

    started = time.monotonic()
    backup = a.playbook("backup.yml")
    assert backup.returncode == 0, backup.output[-4000:]
    (archive,) = Path(a.vars["havre_backup_dir"]).glob("*.tar.gz.age")
    FIGURES["archive bytes"] = archive.stat().st_size
    FIGURES["backup.yml (s)"] = round(backup.seconds, 1)
    teardown = a.playbook(
        "teardown.yml",
        extra={"havre_teardown_confirm": ENCLAVE, "havre_teardown_backup": False},
    )
    assert teardown.returncode == 0, teardown.output[-4000:]
    FIGURES["teardown.yml on A (s)"] = round(teardown.seconds, 1)
    assert _enclave_on(host_engine) == []  # A keeps nothing running
    assert _enclave_on(b_client) == []
    # A keeps its state folder (teardown's default, until the move is checked); the two
    # engines share this machine's disk, so it goes where B's restore won't see it, as if on
    # A's own disk
    state = Path(a.vars["havre_state_dir"])
    left_on_a = a.root / "state-kept-on-a"
    state.rename(left_on_a)

    restore = b.playbook("restore.yml", extra={"havre_restore_archive": str(archive)})
    assert restore.returncode == 0, restore.output[-4000:]
    FIGURES["restore.yml on B (s)"] = round(restore.seconds, 1)
    FIGURES["move (s): backup + teardown + restore"] = round(time.monotonic() - started, 1)

    # the enclave runs on B, from B's data root; nothing of it on A
    running_b = {
        c.name for c in b_client.containers.list(filters={"label": f"havre.enclave={ENCLAVE}"})
    }
    assert f"{ENCLAVE}-hub" in running_b and f"{ENCLAVE}-egress" in running_b, running_b
    assert b_client.info()["DockerRootDir"] != host_engine.info()["DockerRootDir"]
    assert _enclave_on(host_engine) == []

    assert (left_on_a / "egress").is_dir()  # what A kept is still there, untouched by B

    # the chain continues from the same head; the signed record is the same and verifies
    assert _verify_head(b) == (seq, head)
    record_after = b.egress_admin("release-record", rid)
    assert record_after.returncode == 0, record_after.stderr
    assert record_after.stdout == record_before.stdout
    assert _events(b) == events_before  # the requests' whole history came along
    home = Path(b.vars["havre_state_dir"]) / "projects/cardio/homes/alice/notes.txt"
    table = load_table_any(table_path(Path(b.vars["havre_state_dir"])))
    assert table.owner_of(home.stat().st_uid) == ("alice", "cardio")
    assert home.read_text() == HOME_NOTE

    # on B: alice signs in at B's address, her server there has her home, her download is
    # a new event chained onto the head from before the move
    alice = b.user("alice")
    assert alice.start_server("cardio").status_code in (201, 202)
    try:
        alice.wait_ready("cardio")
    except Exception as err:
        logs = {
            name: b_client.containers.get(f"{ENCLAVE}-{name}")
            .logs(tail=30)
            .decode(errors="replace")
            for name in ("hub", "broker")
        }
        raise AssertionError(f"{err}; on engine B: {logs}") from err
    alice.open_server("cardio")
    got = alice.session.get(alice.server_url("cardio", "api/contents/notes.txt"), timeout=30)
    assert got.status_code == 200 and got.json()["content"] == HOME_NOTE
    server = b_client.containers.list(
        filters={"label": [f"havre.enclave={ENCLAVE}", "havre.user=alice"]}
    )
    assert server, "alice's server is not on engine B"
    download = Egress(alice).call("GET", f"requests/{rid}/files/{file_id}/download")
    assert download.status_code == 200 and download.content == TABLE.encode()
    alice.stop_server("cardio")
    new_seq, new_head = _verify_head(b)
    events_after = _events(b)
    assert events_after[: len(events_before)] == events_before
    first_new = events_after[len(events_before)]
    assert first_new["seq"] == seq + 1 and first_new["prev_hash"] == head
    assert first_new["event"] == "DOWNLOADED"
    assert new_seq > seq and new_head != head
    FIGURES["audit head after (new event on B)"] = f"event {new_seq} {new_head}"
    FIGURES["first event on B"] = f"seq {first_new['seq']} prev_hash {first_new['prev_hash']}"
