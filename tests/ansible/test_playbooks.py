"""The Ansible playbooks, run for real against this machine (local connection, as root).

One enclave (``HAVRE_ANSIBLE_ENCLAVE``, default ``havreansible``) on free ports, its state,
config and firewall files in a temporary folder. The module deploys it with site.yml, runs
site.yml again (changed=0) and with --check --diff (changed=0), then: a researcher signs in
through the embedded provider over HTTPS (the lab's self-signed certificate), spawns her
server, probes the host from inside it, gets a table released; the enclave is backed up,
destroyed and restored from the archive, and the audit chain, the signed release record and
her home file are checked, and a new event appends after the old ones. Everything it made
(containers, networks, state, firewall chains) is removed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import yaml

from havre.enclave.config import load_enclave_config
from havre.enclave.identities import load_table_any, table_path
from havre.enclave.networks import project_bridge_name
from havre.host import layout, stack
from tests.enclave_fixtures import free_port
from tests.integration.canaries import new_token, tcp_canary
from tests.integration.hub_client import HubUser
from tests.integration.test_egress_flow import Egress
from tests.integration.test_isolation import SETTLE, gateway_of, in_control, in_notebook

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
ENCLAVE = os.environ.get("HAVRE_ANSIBLE_ENCLAVE", "havreansible")
TABLE = "region,cases\nBretagne,40\nOccitanie,55\nNormandie,23\n"
HOME_NOTE = "my analysis notes, kept across moves\n"
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
#: an operator's daemon.json before the first run (kept, key by key)
OPERATOR_DAEMON_JSON = {
    "data-root": "/var/lib/docker",
    "log-opts": {"max-size": "200m", "labels": "site"},
    "icc": True,
}
#: what the report asks for: recap lines, archive size, move time
FIGURES: dict[str, object] = {}


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> str:
        lines = [line for line in self.output.splitlines() if RECAP.match(line)]
        return lines[-1] if lines else ""

    @property
    def changed(self) -> int:
        match = RECAP.search(self.recap)
        assert match, f"no PLAY RECAP in:\n{self.output[-3000:]}"
        return int(match.group(2))

    @property
    def changed_tasks(self) -> list[str]:
        """The tasks that reported a change, with what havre up said it changed."""
        found, task = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line.strip("* ")
            elif (
                line.startswith("changed:")
                or line.startswith('        "replaced')
                or (line.startswith('        "started'))
            ):
                found.append(f"{task} {line.strip()}")
        return found

    @property
    def failed(self) -> int:
        match = RECAP.search(self.recap)
        return int(match.group(4)) if match else -1


@dataclass
class Deployment:
    root: Path
    inventory: Path
    vars_file: Path
    vars: dict
    passwords: dict[str, str]
    runs: dict[str, Run] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.vars['havre_port']}/"

    @property
    def cert(self) -> str:
        return str(Path(self.vars["havre_config_dir"]) / "tls" / "cert.pem")

    @property
    def config(self):
        return load_enclave_config(Path(self.vars["havre_config_dir"]) / "enclave.yaml")

    def playbook(self, name: str, *args: str, extra: dict | None = None) -> Run:
        command = [str(PLAYBOOK), "-i", str(self.inventory), name, "-e", f"@{self.vars_file}"]
        if extra:
            command += ["-e", json.dumps(extra)]
        started = time.monotonic()
        done = subprocess.run(
            [*command, *args],
            cwd=ANSIBLE,
            capture_output=True,
            text=True,
            timeout=420,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        )
        return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)

    def user(self, name: str) -> HubUser:
        user = HubUser(self.url, name, self.passwords[name])
        user.session.verify = self.cert  # the lab's self-signed certificate, checked
        user.session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace it
        return user.login()

    def egress_admin(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "exec", f"{self.vars['havre_enclave_name']}-egress", "havre-egress-admin"]
            + ["--state"]
            + [self.vars["havre_state_dir"], *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


def _skip_unless_possible() -> docker.DockerClient:
    if os.geteuid() != 0:
        pytest.skip("needs root (the playbooks install firewall rules and drive Docker)")
    if not PLAYBOOK.exists():
        pytest.skip("needs ansible-core in the venv (pip install -e '.[dev]')")
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"needs a running Docker engine (scripts/run-tests.sh starts one): {err}")
    options = layout.StackOptions()
    for image in (options.hub_image, options.egress_image, "havre/notebook:0.1.0"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"needs image {image}: build it with `bash images/build.sh`")
    return client


def _pin_images(client: docker.DockerClient) -> dict[str, object]:
    """Private tags of today's images, so another build on a shared machine doesn't move them
    under the idempotence checks (images/build.sh re-tags havre/*:VERSION)."""
    options = layout.StackOptions()
    pinned = {}
    for var, image in (
        ("havre_hub_image", options.hub_image),
        ("havre_egress_image", options.egress_image),
        ("havre_notebook_images", "havre/notebook:0.1.0"),
    ):
        found = client.images.get(image)
        repository = f"{ENCLAVE}-pinned/{image.split('/')[-1].split(':')[0]}"
        tag = found.id.split(":")[-1][:12]
        found.tag(repository, tag)
        pinned[var] = f"{repository}:{tag}"
    pinned["havre_notebook_images"] = [pinned["havre_notebook_images"]]
    return pinned


def _remove_everything(client: docker.DockerClient, deployment: Deployment) -> None:
    config = Path(deployment.vars["havre_config_dir"]) / "enclave.yaml"
    if config.exists():
        subprocess.run(
            [str(REPO / ".venv/bin/havre"), "down", "--purge", "--config", str(config)],
            capture_output=True,
            timeout=120,
        )
    for container in client.containers.list(all=True, filters={"label": "havre.test=ansible"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": "havre.test=ansible"}):
        network.remove()
    script = Path(deployment.vars["havre_firewall_script"])
    if script.exists():
        subprocess.run([str(script), "remove"], capture_output=True, timeout=60)
    shutil.rmtree(deployment.root, ignore_errors=True)
    v = deployment.vars
    for tag in (v["havre_hub_image"], v["havre_egress_image"], *v["havre_notebook_images"]):
        try:
            client.images.remove(tag, noprune=True)  # the private tag only
        except docker.errors.APIError:
            pass  # still used by a container being removed: docker keeps it


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    client = _skip_unless_possible()
    root = Path(tmp_path_factory.mktemp("ansible"))
    passwords = {name: secrets.token_urlsafe(12) for name in ("alice", "olivia", "oscar")}
    groups = {"alice": ["project-cardio"], "olivia": ["output-checkers"]}
    groups["oscar"] = groups["olivia"]
    variables = {
        "havre_enclave_name": ENCLAVE,
        "havre_state_dir": str(root / "state"),
        "havre_config_dir": str(root / "etc"),
        "havre_backup_dir": str(root / "backups"),
        **age_keys(root),
        "havre_source_dir": str(REPO),
        "havre_venv_dir": str(REPO / ".venv"),
        "havre_images_mode": "present",  # the images are shared with the rest of the suite
        **_pin_images(client),
        "havre_port": free_port(),
        "havre_idp_port": free_port(),
        "havre_tls_mode": "self_signed",
        "havre_firewall_dir": str(root / "firewall"),
        "havre_firewall_script": str(root / "sbin" / "havre-firewall"),
        "havre_firewall_unit": str(root / "systemd" / "havre-firewall.service"),
        # the Docker host role merges into this copy, never into the machine's daemon.json
        # (other runs share the engine, and the test never restarts it)
        "havre_docker_host_daemon_json": str(root / "docker" / "daemon.json"),
        "havre_identity": {
            "provider": "embedded",
            "checker_groups": ["output-checkers"],
            "admin_groups": ["havre-admins"],
        },
        "havre_idp_users": [
            {"name": name, "password": password, "groups": groups[name]}
            for name, password in passwords.items()
        ],
    }
    for folder in ("sbin", "systemd", "inventory/group_vars/havre", "docker"):
        (root / folder).mkdir(parents=True)
    (root / "docker" / "daemon.json").write_text(json.dumps(OPERATOR_DAEMON_JSON))
    # the projects live in the inventory, where the project and member playbooks write them
    projects_file = root / "inventory/group_vars/havre/projects.yml"
    projects = {"cardio": {"title": "Cardiovascular outcomes", "groups": ["project-cardio"]}}
    projects_file.write_text(yaml.safe_dump({"havre_projects": projects}))
    variables["havre_projects_file"] = str(projects_file)
    vars_file = root / "vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    vars_file.chmod(0o600)
    hosts = {
        "havre": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
                }
            }
        }
    }
    inventory = root / "inventory/hosts.yml"
    inventory.write_text(yaml.safe_dump(hosts))
    (root / "bare-hosts.yml").write_text(yaml.safe_dump(hosts))  # no projects at all
    made = Deployment(root, inventory, vars_file, variables, passwords)
    leftover = Path("/tmp") / f"{ENCLAVE}-leftover-config"
    try:
        made.runs["first"] = made.playbook("site.yml")
        assert made.runs["first"].returncode == 0, made.runs["first"].output[-4000:]
        made.runs["second"] = made.playbook("site.yml")
        made.runs["check"] = made.playbook("site.yml", "--check", "--diff")
        FIGURES["first run"] = made.runs["first"].recap
        FIGURES["second run"] = made.runs["second"].recap
        FIGURES["check run"] = made.runs["check"].recap
        yield made
    finally:
        _remove_everything(client, made)
        shutil.rmtree(leftover, ignore_errors=True)
        client.close()
        print("\nansible figures: " + json.dumps(FIGURES, indent=1))


def test_first_run_brings_up_the_enclave(deployment):
    first = deployment.runs["first"]
    assert first.failed == 0 and first.changed > 0, first.recap
    health = deployment.user("alice").session.get(deployment.url + "hub/health", timeout=10)
    assert health.status_code == 200


def test_second_run_changes_nothing(deployment):
    second = deployment.runs["second"]
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed == 0, (second.recap, second.changed_tasks)


def test_check_diff_on_the_deployed_host_reports_no_change(deployment):
    check = deployment.runs["check"]
    assert check.returncode == 0, check.output[-4000:]
    assert check.changed == 0, check.recap


def test_docker_daemon_json_is_merged_into_the_operators(deployment):
    """The role merged its settings into the operator's daemon.json (the test's copy): their
    keys kept, the security settings applied, the rotation filled in; the two later runs
    (second, --check) left it as it was, so the merge is stable."""
    written = json.loads((deployment.root / "docker" / "daemon.json").read_text())
    assert written == {
        "data-root": "/var/lib/docker",
        "log-opts": {"max-size": "200m", "labels": "site", "max-file": "5"},
        "icc": False,
        "no-new-privileges": True,
        "live-restore": True,
    }
    backups = list((deployment.root / "docker").glob("daemon.json.*~"))
    assert [json.loads(b.read_text()) for b in backups] == [OPERATOR_DAEMON_JSON]


def test_firewall_rules_are_persisted_and_live(deployment):
    rules = Path(deployment.vars["havre_firewall_dir"]) / "rules.v4"
    assert "-A HAVRE-INPUT -i hvp+" in rules.read_text()
    assert (Path(deployment.vars["havre_firewall_dir"]) / "rules.v6").exists()
    unit = Path(deployment.vars["havre_firewall_unit"]).read_text()
    assert f"ExecStart={deployment.vars['havre_firewall_script']} apply" in unit
    assert "After=docker.service" in unit

    def live() -> str:
        return subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout

    assert "-A INPUT -j HAVRE-INPUT" in live() and "-A DOCKER-USER -j HAVRE-FORWARD" in live()
    assert '-A HAVRE-INPUT -i hvp+ -m comment --comment "havre: project network to host"' in live()
    # a reboot loses the live rules; the boot unit's command puts back what the files say
    script = deployment.vars["havre_firewall_script"]
    subprocess.run([script, "remove"], check=True, capture_output=True)
    assert "HAVRE-INPUT" not in live()
    out = subprocess.run([script, "apply"], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "changed" and "-A INPUT -j HAVRE-INPUT" in live()
    again = subprocess.run([script, "apply"], check=True, capture_output=True, text=True).stdout
    assert again.strip() == "unchanged"


def test_firewall_alone_stops_a_project_network_reaching_the_host(deployment):
    """Attack through a network that has a host address (no inhibit_ipv4): only the firewall
    stands between it and the host. The control network (no hvp bridge) reaches the canary."""
    client = docker.from_env(version="auto")
    canary = tcp_canary("0.0.0.0")
    made = []
    try:
        for bridge in ("hvctl" + secrets.token_hex(4), "hvp" + secrets.token_hex(6)):
            made.append(
                client.networks.create(
                    f"{ENCLAVE}-fwtest-{bridge}",
                    driver="bridge",
                    internal=True,
                    options={"com.docker.network.bridge.name": bridge},
                    labels={"havre.test": "ansible"},
                )
            )
        control, guarded = (n.name for n in made)
        token = new_token()
        in_control(client, control, "tcp", gateway_of(client, control), canary.port, token)
        time.sleep(SETTLE)
        assert canary.saw(token), "the control probe did not reach the host canary"
        token = new_token()
        result = in_control(client, guarded, "tcp", gateway_of(client, guarded), canary.port, token)
        time.sleep(SETTLE)
        assert not canary.saw(token) and result["error"], result
    finally:
        canary.close()
        for network in made:
            network.remove()
        client.close()


@pytest.fixture(scope="module")
def released(deployment):
    """Alice's table released through the egress API, her home note, and the audit head."""
    return release_a_table(deployment)


def release_a_table(deployment: Deployment) -> tuple[HubUser, str, str]:
    """Alice writes her home note and a table, asks for the table's release, two checkers
    approve, it is released and she downloads it: (alice, request id, file id)."""
    alice = deployment.user("alice")
    assert alice.start_server("cardio").status_code in (201, 202)
    alice.wait_ready("cardio")
    alice.open_server("cardio")
    xsrf = alice.session.cookies.get("_xsrf", path="/user/alice/cardio/") or ""
    for path, text in (("outputs/cases_by_region.csv", TABLE), ("notes.txt", HOME_NOTE)):
        r = alice.session.put(
            alice.server_url("cardio", f"api/contents/{path}"),
            headers={"X-XSRFToken": xsrf},
            json={"type": "file", "format": "text", "content": text},
            timeout=30,
        )
        assert r.status_code in (200, 201), (path, r.status_code, r.text[:300])

    researcher = Egress(alice)
    rid = researcher.ok("POST", "api/requests", 201, json={"project": "cardio", "title": "Cases"})[
        "id"
    ]
    files = [
        researcher.ok(
            "POST", f"api/requests/{rid}/files", 201, json={"path": "cases_by_region.csv"}
        )["file"]
    ]
    researcher.ok(
        "PUT",
        f"api/requests/{rid}/groups/main",
        json={"context": "Stays by region", "controls": "All cells >= 10"},
    )
    researcher.ok("POST", f"api/requests/{rid}/submit")
    checkers = [Egress(deployment.user(name)) for name in ("olivia", "oscar")]
    for checker in checkers:
        checker.ok(
            "PUT", f"api/requests/{rid}/files/{files[0]['id']}/vote", json={"vote": "approve"}
        )
        checker.ok("POST", f"api/requests/{rid}/review")
    checkers[1].ok("POST", f"api/requests/{rid}/approve")
    assert checkers[1].ok("POST", f"api/requests/{rid}/release")["state"] == "released"
    download = researcher.call("GET", f"requests/{rid}/files/{files[0]['id']}/download")
    assert download.content == TABLE.encode()
    return alice, rid, files[0]["id"]


def test_smoke_login_spawn_probe_release(deployment, released):
    alice, rid, _file_id = released
    client = docker.from_env(version="auto")
    notebook = client.containers.list(
        filters={"label": [f"havre.enclave={ENCLAVE}", "havre.user=alice"]}
    )[0]
    assert notebook.attrs["HostConfig"]["NetworkMode"] == deployment.config.network_name("cardio")
    canary = tcp_canary("0.0.0.0")
    try:
        targets = [gateway_of(client, f"{ENCLAVE}-front"), "172.17.0.1"]
        tokens = {target: new_token() for target in targets}
        results = {
            t: in_notebook(notebook, "tcp", t, canary.port, tok) for t, tok in tokens.items()
        }
        time.sleep(SETTLE)
        assert not [t for t, tok in tokens.items() if canary.saw(tok)], results
        assert all(r["error"] for r in results.values()), results
    finally:
        canary.close()
        client.close()
    record = Egress(alice).ok("GET", f"api/requests/{rid}/record")
    assert record["signature"]["algorithm"] == "ed25519"


def _verify_head(deployment: Deployment) -> tuple[int, str]:
    done = deployment.egress_admin("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"ok: (\d+) events verified.*head: event (\d+) ([0-9a-f]{64})", done.stdout)
    assert match, done.stdout
    return int(match.group(2)), match.group(3)


def _events(deployment: Deployment) -> list[dict]:
    done = deployment.egress_admin("export", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_move_backup_destroy_restore(deployment, released):
    alice, rid, file_id = released
    alice.stop_server("cardio")
    seq, head = _verify_head(deployment)
    record_before = deployment.egress_admin("release-record", rid)
    assert record_before.returncode == 0, record_before.stderr
    events_before = _events(deployment)

    started = time.monotonic()
    backup = deployment.playbook("backup.yml")
    assert backup.returncode == 0, backup.output[-4000:]
    (archive,) = Path(deployment.vars["havre_backup_dir"]).glob("*.tar.gz.age")
    FIGURES["archive bytes"] = archive.stat().st_size

    # destroy: containers, networks, state folder, config and certificate
    config = deployment.config
    stack.down(config, purge=True)
    shutil.rmtree(deployment.vars["havre_config_dir"])
    assert not Path(deployment.vars["havre_state_dir"]).exists()

    restore = deployment.playbook("restore.yml", extra={"havre_restore_archive": str(archive)})
    assert restore.returncode == 0, restore.output[-4000:]
    FIGURES["move seconds (backup + destroy + restore)"] = round(time.monotonic() - started, 1)
    FIGURES["restore recap"] = restore.recap

    # the chain continues from the same head; the signed record is the same and verifies
    assert _verify_head(deployment) == (seq, head)
    record_after = deployment.egress_admin("release-record", rid)
    assert record_after.returncode == 0, record_after.stderr
    assert record_after.stdout == record_before.stdout
    home = Path(deployment.vars["havre_state_dir"]) / "projects/cardio/homes/alice/notes.txt"
    # still her server's own uid (the identity table travels with the state)
    table = load_table_any(table_path(Path(deployment.vars["havre_state_dir"])))
    assert table.owner_of(home.stat().st_uid) == ("alice", "cardio")
    assert home.read_text() == HOME_NOTE

    # after the move: her server has her home; a new event appends after the old ones
    alice = deployment.user("alice")
    assert alice.start_server("cardio").status_code in (201, 202)
    alice.wait_ready("cardio")
    alice.open_server("cardio")
    got = alice.session.get(alice.server_url("cardio", "api/contents/notes.txt"), timeout=30)
    assert got.status_code == 200 and got.json()["content"] == HOME_NOTE
    download = Egress(alice).call("GET", f"requests/{rid}/files/{file_id}/download")
    assert download.status_code == 200 and download.content == TABLE.encode()
    alice.stop_server("cardio")
    new_seq, new_head = _verify_head(deployment)
    assert new_seq > seq and new_head != head
    events_after = _events(deployment)
    assert events_after[: len(events_before)] == events_before
    assert events_after[len(events_before)]["event"] == "DOWNLOADED"


def age_keys(root: Path) -> dict:
    """An operator's age identity in ROOT, and the variables that back up to it and restore
    with it (the backups of these tests are encrypted, as a site's are)."""
    identity = root / "operator-age.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return {"havre_backup_age_recipients": [public], "havre_restore_age_identity": str(identity)}


def _tampered_copy(archive: Path, target: Path, identity: Path) -> None:
    """Rewrite the archive with one member's bytes changed, and a matching .sha256: decrypted
    with the operator's identity and encrypted again to it (age does not prove who wrote an
    archive: anyone holding the public key can; the manifest check is what refuses this)."""
    plain, changed = target.with_name("plain.tar.gz"), target.with_name("changed.tar.gz")
    subprocess.run(["age", "-d", "-i", str(identity), "-o", str(plain), str(archive)], check=True)
    with tarfile.open(plain) as src, tarfile.open(changed, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("idp/users.json"):
                data = data.replace(b"project-cardio", b"havre-admins")
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    subprocess.run(["age", "-e", "-i", str(identity), "-o", str(target), str(changed)], check=True)
    plain.unlink()
    changed.unlink()
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    Path(f"{target}.sha256").write_text(f"{digest}  {target.name}\n")


def test_restore_refuses_a_tampered_archive(deployment, released):
    (archive,) = Path(deployment.vars["havre_backup_dir"]).glob("*.tar.gz.age")
    tampered = deployment.root / "tampered" / archive.name
    tampered.parent.mkdir()
    _tampered_copy(archive, tampered, Path(deployment.vars["havre_restore_age_identity"]))
    users = Path(deployment.vars["havre_state_dir"]) / "idp/users.json"
    before = users.read_bytes()
    run = deployment.playbook("restore.yml", extra={"havre_restore_archive": str(tampered)})
    assert run.returncode != 0
    assert "Refusing to restore" in run.output and "sha256 differs from the manifest" in run.output
    assert "idp/users.json" in run.output
    assert users.read_bytes() == before  # nothing was touched


@pytest.mark.parametrize(
    ("change", "inventory", "named"),
    [
        ({"havre_port": "eighty"}, "inventory/hosts.yml", "argument 'havre_port' is of type"),
        ({}, "bare-hosts.yml", "missing required arguments: havre_projects"),
    ],
)
def test_wrong_variables_fail_early_naming_them(deployment, change, inventory, named):
    variables = {**deployment.vars, **change}
    vars_file = deployment.root / "bad-vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    bad = Deployment(deployment.root, deployment.root / inventory, vars_file, variables, {})
    run = bad.playbook("site.yml")
    assert run.returncode != 0 and named in run.output, run.output[-3000:]
    assert "Check every role's variables" in run.output
    assert run.changed == 0  # it stopped before changing anything


def test_member_playbook_adds_and_removes_a_member(deployment):
    projects_file = Path(deployment.vars["havre_projects_file"])

    def members() -> tuple[list[str], list[str]]:
        in_inventory = yaml.safe_load(projects_file.read_text())["havre_projects"]["cardio"]
        return in_inventory.get("members", []), list(deployment.config.projects["cardio"].members)

    change = {"havre_change_project": "cardio", "havre_change_member": "dave"}
    run = deployment.playbook("member.yml", extra={**change, "havre_change_action": "add"})
    assert run.returncode == 0, run.output[-3000:]
    assert members() == (["dave"], ["dave"])
    again = deployment.playbook("member.yml", extra={**change, "havre_change_action": "add"})
    assert again.returncode == 0 and again.changed == 0, (again.recap, again.changed_tasks)
    run = deployment.playbook("member.yml", extra={**change, "havre_change_action": "remove"})
    assert run.returncode == 0, run.output[-3000:]
    assert members() == ([], [])
    bad = deployment.playbook("member.yml", extra={**change, "havre_change_action": "promote"})
    assert bad.returncode != 0 and "havre_change_action" in bad.output


def test_project_add_then_archive(deployment):
    client = docker.from_env(version="auto")
    network = deployment.config.network_name("onco")
    state = Path(deployment.vars["havre_state_dir"])
    try:
        extra = {"havre_change_project": "onco", "havre_change_title": "Oncology registry"}
        run = deployment.playbook("project-add.yml", extra=extra)
        assert run.returncode == 0, run.output[-3000:]
        assert list(deployment.config.projects["onco"].groups) == ["project-onco"]
        bridge = client.api.inspect_network(network)["Options"]["com.docker.network.bridge.name"]
        assert bridge == project_bridge_name(network)
        assert (state / "projects/onco/data").is_dir()

        run = deployment.playbook("project-archive.yml", extra={"havre_change_project": "onco"})
        assert run.returncode == 0, run.output[-3000:]
        assert "onco" not in deployment.config.projects
        assert not client.networks.list(names=[network])
        assert not (state / "projects/onco").exists()
        (archived,) = (state / "archived").glob("onco-*")
        assert (archived / "homes").is_dir()
    finally:
        client.close()


def test_rotate_secrets(deployment):
    secrets_dir = Path(deployment.vars["havre_state_dir"]) / "secrets"
    signing_key = Path(deployment.vars["havre_state_dir"]) / "egress/signing-key.pem"
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    key_before = signing_key.read_bytes()
    egress_cookie = Path(deployment.vars["havre_state_dir"]) / "egress/cookie-secret"
    cookie_before = egress_cookie.read_bytes()
    run = deployment.playbook("rotate-secrets.yml")
    assert run.returncode == 0, run.output[-3000:]
    after = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    for name in ("cookie-secret", "proxy-auth-token", "egress-api-token"):
        assert after[name] != before[name], name
    assert after["jupyterhub-crypt-key"] == before["jupyterhub-crypt-key"]
    assert signing_key.read_bytes() == key_before  # earlier release records stay checkable
    assert egress_cookie.read_bytes() != cookie_before  # egress sessions end too, on purpose
    assert all((secrets_dir / name).stat().st_mode & 0o777 == 0o600 for name in after)
    alice = deployment.user("alice")  # signs in again with the new secrets
    assert Egress(alice).ok("GET", "api/whoami")["projects"] == ["cardio"]


def test_images_load_from_an_archive(deployment):
    """havre_images_mode=load: a `docker save` archive copied to the host and loaded once."""
    tiny = f"{ENCLAVE}-pinned/tiny:1"
    source = deployment.root / "tiny"
    source.mkdir()
    (source / "hello.txt").write_text("a tiny image for the load test\n")
    subprocess.run(
        f"tar -C {source} -c . | docker import - {tiny}", shell=True, check=True, timeout=60
    )
    archive = deployment.root / "tiny-image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), tiny], check=True, timeout=60)
    subprocess.run(["docker", "rmi", tiny], check=True, capture_output=True, timeout=60)
    extra = {
        "havre_images_mode": "load",
        "havre_images_archives": [str(archive)],
        "havre_images_archive_dir": str(deployment.root / "image-archives"),
        "havre_notebook_images": [tiny],
    }
    try:
        first = deployment.playbook("site.yml", "--tags", "images", extra=extra)
        assert first.returncode == 0 and first.changed > 0, first.output[-3000:]
        assert docker.from_env(version="auto").images.get(tiny)
        again = deployment.playbook("site.yml", "--tags", "images", extra=extra)
        assert again.returncode == 0 and again.changed == 0, (again.recap, again.changed_tasks)
    finally:
        subprocess.run(["docker", "rmi", tiny], capture_output=True, timeout=60)
