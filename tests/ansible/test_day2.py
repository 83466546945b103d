"""Day-2 operations with the playbooks, run for real against this machine (issue #13).

One enclave (``HAVRE_DAY2_ENCLAVE``, default ``havreday2``) deployed with site.yml on free
ports, its files in a temporary folder. Each refusal is shown with its positive control (the
same playbook going through when the condition is absent), and "nothing changed" is checked
on the host: the same container ids still running, the hub still answering, files
byte-identical. The module ends with teardown.yml, checked to leave nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import stat
import subprocess
import time
from pathlib import Path

import docker
import pytest
import requests
import yaml

from tests.ansible.test_playbooks import (
    ANSIBLE,
    PLAYBOOK,
    REPO,
    Deployment,
    _pin_images,
    _remove_everything,
    _skip_unless_possible,
    _tampered_copy,
    age_keys,
)
from tests.enclave_fixtures import free_port
from tests.integration.hub_client import HubError, HubUser

ENCLAVE = os.environ.get("HAVRE_DAY2_ENCLAVE", "havreday2")
DOCS = [*sorted((REPO / "docs" / "sysadmin").glob("*.md")), ANSIBLE / "README.md"]
TIMES: dict[str, float] = {}


def _service_ids(client: docker.DockerClient) -> dict[str, tuple[str, str]]:
    """The enclave's service containers: name -> (id, status)."""
    found = client.containers.list(all=True, filters={"label": f"havre.enclave={ENCLAVE}"})
    return {c.name: (c.id, c.status) for c in found if c.labels.get("havre.role") != "notebook"}


def _health(deployment: Deployment, port: int | None = None) -> int:
    port = port or deployment.vars["havre_port"]
    response = requests.get(
        f"https://127.0.0.1:{port}/hub/health", verify=deployment.cert, timeout=10
    )
    return response.status_code


def _with(deployment: Deployment, name: str, **change: object) -> Deployment:
    """The same inventory with other variables (a vars file of its own)."""
    variables = {**deployment.vars, **change}
    vars_file = deployment.root / f"{name}-vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    vars_file.chmod(0o600)
    return Deployment(deployment.root, deployment.inventory, vars_file, variables, {})


def _projects(deployment: Deployment) -> dict:
    return yaml.safe_load(Path(deployment.vars["havre_projects_file"]).read_text())[
        "havre_projects"
    ]


@pytest.fixture(scope="module")
def day2(tmp_path_factory):
    client = _skip_unless_possible()
    root = Path(tmp_path_factory.mktemp("day2"))
    password, bea_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    variables = {
        "havre_enclave_name": ENCLAVE,
        "havre_state_dir": str(root / "state"),
        "havre_config_dir": str(root / "etc"),
        "havre_backup_dir": str(root / "backups"),
        **age_keys(root),
        "havre_source_dir": str(REPO),
        "havre_venv_dir": str(REPO / ".venv"),
        "havre_images_mode": "present",
        **_pin_images(client),
        "havre_port": free_port(),
        "havre_idp_port": free_port(),
        "havre_tls_mode": "self_signed",
        "havre_firewall_dir": str(root / "firewall"),
        "havre_firewall_script": str(root / "sbin" / "havre-firewall"),
        "havre_firewall_unit": str(root / "systemd" / "havre-firewall.service"),
        # never the machine's own daemon.json (a shared engine; see test_playbooks.py)
        "havre_docker_host_daemon_json": str(root / "docker" / "daemon.json"),
        "havre_identity": {
            "provider": "embedded",
            "checker_groups": ["output-checkers"],
            "membership_check_seconds": 10,  # the day-2 table waits for a removal to apply
        },
        "havre_idp_users": [
            {"name": "alice", "password": password, "groups": ["project-cardio"]},
            # in no group: a member only while a project lists her (member.yml)
            {"name": "bea", "password": bea_password, "groups": []},
        ],
    }
    for folder in ("sbin", "systemd", "inventory/group_vars/havre"):
        (root / folder).mkdir(parents=True)
    projects_file = root / "inventory/group_vars/havre/projects.yml"
    projects = {
        "cardio": {
            "title": "Cardiovascular outcomes",
            "members": ["alice", "dave"],
            "groups": ["project-cardio", "cardio-readers"],
        }
    }
    projects_file.write_text(yaml.safe_dump({"havre_projects": projects}))
    variables["havre_projects_file"] = str(projects_file)
    vars_file = root / "vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    vars_file.chmod(0o600)
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
    }
    inventory = root / "inventory/hosts.yml"
    inventory.write_text(yaml.safe_dump({"havre": {"hosts": {"localhost": host}}}))
    made = Deployment(
        root, inventory, vars_file, variables, {"alice": password, "bea": bea_password}
    )
    try:
        made.runs["first"] = made.playbook("site.yml")
        assert made.runs["first"].returncode == 0, made.runs["first"].output[-4000:]
        TIMES["first deploy"] = round(made.runs["first"].seconds, 1)
        yield made
    finally:
        for container in client.containers.list(
            all=True, filters={"label": f"havre.enclave={ENCLAVE}"}
        ):
            container.remove(force=True)
        for network in client.networks.list(filters={"label": f"havre.enclave={ENCLAVE}"}):
            network.reload()
            for attached in network.attrs.get("Containers") or {}:
                network.disconnect(attached, force=True)
            network.remove()
        _remove_everything(client, made)
        client.close()
        print("\nday-2 playbook seconds: " + json.dumps(TIMES))


def test_no_default_inventory_targets_an_enclave():
    """A forgotten -i deploys nothing: ansible.cfg names no inventory."""
    if not PLAYBOOK.exists():
        pytest.skip("needs ansible-core in the venv (pip install -e '.[dev]')")
    config = (ANSIBLE / "ansible.cfg").read_text()
    assert not re.search(r"^\s*inventory\s*=", config, re.M), config
    done = subprocess.run(
        [str(PLAYBOOK), "site.yml", "--check"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "ANSIBLE_INVENTORY"},
    )
    output = done.stdout + done.stderr
    assert "no hosts matched" in output, output[-2000:]
    assert "TASK [" not in output  # not one task ran


def _continued_lines(text: str) -> list[str]:
    return re.sub(r"\\\n\s*", " ", text).splitlines()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_site_commands_in_the_docs_carry_the_vault_flag(doc):
    """A site's inventory has a vault: every documented command on it asks for the password
    (the local lab inventory has none)."""
    missing = [
        line.strip()
        for line in _continued_lines(doc.read_text())
        if re.search(r"ansible-playbook\s.*-i\s+inventories/(<site>|example)/", line)
        and "--ask-vault-pass" not in line
        and "--vault-password-file" not in line
    ]
    assert not missing, f"{doc.name}: commands without the vault flag: {missing}"


@pytest.mark.docker
def test_check_mode_works_on_a_fresh_host_with_self_signed_tls(tmp_path):
    """--check on a host where this enclave was never deployed (no config folder, no TLS key,
    no state) runs through and creates nothing."""
    client = _skip_unless_possible()
    root = tmp_path
    variables = {
        "havre_enclave_name": f"{ENCLAVE}f",
        "havre_state_dir": str(root / "state"),
        "havre_config_dir": str(root / "etc"),
        "havre_backup_dir": str(root / "backups"),
        "havre_source_dir": str(REPO),
        "havre_venv_dir": str(REPO / ".venv"),
        "havre_images_mode": "present",
        "havre_hub_image": "havre/hub:0.1.0",
        "havre_egress_image": "havre/egress:0.1.0",
        "havre_notebook_images": ["havre/notebook:0.1.0"],
        "havre_port": free_port(),
        "havre_idp_port": free_port(),
        "havre_tls_mode": "self_signed",
        "havre_firewall_dir": str(root / "firewall"),
        "havre_firewall_script": str(root / "sbin" / "havre-firewall"),
        "havre_firewall_unit": str(root / "systemd" / "havre-firewall.service"),
        # never the machine's own daemon.json (a shared engine; see test_playbooks.py)
        "havre_docker_host_daemon_json": str(root / "docker" / "daemon.json"),
        "havre_projects": {"cardio": {"title": "Cardio", "groups": ["project-cardio"]}},
    }
    vars_file = root / "vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(REPO / ".venv/bin/python"),
    }
    inventory = root / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"havre": {"hosts": {"localhost": host}}}))
    fresh = Deployment(root, inventory, vars_file, variables, {})
    run = fresh.playbook("site.yml", "--check", "--diff")
    client.close()
    assert run.returncode == 0 and run.failed == 0, run.output[-4000:]
    assert run.changed > 0  # it says what it would do
    for made in ("state", "etc", "backups", "firewall"):
        assert not (root / made).exists(), made


@pytest.mark.docker
def test_second_run_changes_nothing(day2):
    second = day2.playbook("site.yml")
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed == 0, (second.recap, second.changed_tasks)
    marker = json.loads((Path(day2.vars["havre_state_dir"]) / "havre-enclave-id").read_text())
    assert marker["name"] == ENCLAVE


@pytest.mark.docker
def test_same_name_other_state_dir_is_refused_before_anything_changes(day2, tmp_path):
    client = docker.from_env(version="auto")
    before = _service_ids(client)
    assert before and all(status == "running" for _, status in before.values()), before
    other = {
        "havre_state_dir": str(tmp_path / "state"),
        "havre_config_dir": str(tmp_path / "etc"),
        "havre_port": free_port(),
        "havre_idp_port": free_port(),
    }
    second = _with(day2, "second", **other)
    run = second.playbook("site.yml")
    assert run.returncode != 0, run.output[-3000:]
    assert f"another enclave named '{ENCLAVE}' already runs on this host" in run.output
    assert day2.vars["havre_state_dir"] in run.output and "Nothing was changed" in run.output
    assert run.changed == 0, run.changed_tasks
    assert not (tmp_path / "state").exists() and not (tmp_path / "etc").exists()
    assert _service_ids(client) == before
    assert _health(day2) == 200
    # teardown.yml refuses in the same way (it would remove the first enclave's containers)
    teardown = second.playbook("teardown.yml", extra={"havre_teardown_confirm": ENCLAVE})
    assert teardown.returncode != 0 and "already runs on this host" in teardown.output
    assert _service_ids(client) == before

    # positive control: the same inventory under another name goes through (checked mode)
    control = _with(day2, "second-renamed", havre_enclave_name=f"{ENCLAVE}b", **other)
    run = control.playbook("site.yml", "--check")
    assert run.returncode == 0, run.output[-3000:]

    # and the marker: this enclave's state folder deployed under another name is refused
    renamed = _with(day2, "renamed", havre_enclave_name=f"{ENCLAVE}b")
    run = renamed.playbook("site.yml", "--check")
    assert run.returncode != 0
    assert f"belongs to the enclave '{ENCLAVE}'" in run.output, run.output[-3000:]
    assert _service_ids(client) == before
    client.close()


@pytest.mark.docker
def test_busy_port_is_refused_before_anything_stops(day2):
    client = docker.from_env(version="auto")
    before = _service_ids(client)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    moved = _with(day2, "moved", havre_port=port)
    try:
        run = moved.playbook("site.yml")
        assert run.returncode != 0
        assert f"port {port} on 127.0.0.1 (havre_port) is already in use" in run.output, run.output[
            -3000:
        ]
        assert run.changed == 0, run.changed_tasks
        assert _service_ids(client) == before  # the hub was not removed
        assert _health(day2) == 200
        # `havre up` by hand (what the role runs) refuses the same way before it stops anything
        v, etc = day2.vars, day2.vars["havre_config_dir"]
        by_hand = subprocess.run(
            [str(REPO / ".venv/bin/havre"), "up", "--json", "--create-project-networks"]
            + ["--config", f"{etc}/enclave.yaml", "--hub-image", v["havre_hub_image"]]
            + ["--egress-image", v["havre_egress_image"], "--bind", "127.0.0.1"]
            + ["--port", str(port), "--idp-port", str(v["havre_idp_port"])]
            + ["--tls-cert", f"{etc}/tls/cert.pem", "--tls-key", f"{etc}/tls/key.pem"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert by_hand.returncode == 1, by_hand.stdout + by_hand.stderr
        assert f"port {port} on 127.0.0.1 (--port) can't be used" in by_hand.stderr
        assert _service_ids(client) == before and _health(day2) == 200
    finally:
        busy.close()
    # positive control: the port free, the same playbook moves the enclave there
    run = moved.playbook("site.yml")
    assert run.returncode == 0, run.output[-3000:]
    TIMES["site.yml moving the port"] = round(run.seconds, 1)
    day2.vars.update(moved.vars)
    day2.vars_file.write_text(yaml.safe_dump(day2.vars))
    assert _health(day2, port) == 200
    client.close()


@pytest.mark.docker
def test_retitle_keeps_members_and_a_title_with_spaces(day2):
    projects_file = Path(day2.vars["havre_projects_file"])
    title = "Cardiovascular outcomes registry 2026"
    # the form ansible-playbook cuts at the space is refused before anything is written
    before = projects_file.read_bytes()
    cut = day2.playbook(
        "project-add.yml", "-e", "havre_change_project=cardio", "-e", f"havre_change_title={title}"
    )
    assert cut.returncode != 0 and "An -e value was cut at a space" in cut.output
    assert "outcomes registry 2026" in cut.output
    assert projects_file.read_bytes() == before

    # the documented form (the value quoted inside the argument) goes through whole
    documented = ["-e", "havre_change_project=cardio", "-e", f'havre_change_title="{title}"']
    run = day2.playbook("project-add.yml", *documented)
    assert run.returncode == 0, run.output[-3000:]
    TIMES["project-add.yml retitle"] = round(run.seconds, 1)
    cardio = _projects(day2)["cardio"]
    assert cardio["title"] == title
    assert sorted(cardio["members"]) == ["alice", "dave"]  # kept (in the order the file had)
    assert cardio["groups"] == ["project-cardio", "cardio-readers"]
    config = day2.config.projects["cardio"]
    assert config.title == title and sorted(config.members) == ["alice", "dave"]
    assert list(config.groups) == ["project-cardio", "cardio-readers"]
    again = day2.playbook("project-add.yml", *documented)
    assert again.returncode == 0 and again.changed == 0, (again.recap, again.changed_tasks)


def _archive_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.docker
def test_backup_fetched_0600_and_tampered_restore_leaves_the_good_archive(day2):
    client = docker.from_env(version="auto")
    fetched = day2.root / "fetched"
    run = day2.playbook("backup.yml", extra={"havre_backup_fetch_dir": str(fetched)})
    assert run.returncode == 0, run.output[-3000:]
    assert stat.S_IMODE(fetched.stat().st_mode) == 0o700
    copies = sorted(fetched.iterdir())
    assert [p.suffix for p in copies] == [".age", ".sha256"]  # encrypted to the operator
    assert {stat.S_IMODE(p.stat().st_mode) for p in copies} == {0o600}, [
        oct(p.stat().st_mode) for p in copies
    ]

    backups = Path(day2.vars["havre_backup_dir"])
    good = _archive_bytes(backups)
    (archive,) = backups.glob("*.tar.gz.age")
    tampered = day2.root / "tampered" / archive.name  # the same name as the host's good one
    tampered.parent.mkdir()
    _tampered_copy(archive, tampered, Path(day2.vars["havre_restore_age_identity"]))
    users = Path(day2.vars["havre_state_dir"]) / "idp/users.json"
    users_before, services = users.read_bytes(), _service_ids(client)

    run = day2.playbook("restore.yml", extra={"havre_restore_archive": str(tampered)})
    assert run.returncode != 0
    assert "sha256 differs from the manifest" in run.output, run.output[-3000:]
    assert "Nothing was changed on this host" in run.output
    assert _archive_bytes(backups) == good  # byte-identical, .sha256 included
    assert not list(backups.glob(".incoming-*"))  # the temporary copy is gone
    assert users.read_bytes() == users_before
    assert _service_ids(client) == services and _health(day2) == 200

    # positive control: the good archive (the controller's copy, same name) verifies, and the
    # restore then stops at the state folder not being empty, still before anything stops
    run = day2.playbook("restore.yml", extra={"havre_restore_archive": str(fetched / archive.name)})
    assert run.returncode != 0
    assert "sha256 differs" not in run.output
    assert f"Refusing to restore into {day2.vars['havre_state_dir']}: it is not empty" in run.output
    assert _archive_bytes(backups) == good
    assert _service_ids(client) == services and _health(day2) == 200
    client.close()


@pytest.mark.docker
def test_the_documented_audit_verify_command_works_as_written(day2):
    text = (REPO / "docs/sysadmin/backup-restore.md").read_text()
    (command,) = [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith("docker exec") and "havre-egress-admin" in line
    ]
    command = command.replace("<name>", ENCLAVE).replace(
        "/var/lib/havre", day2.vars["havre_state_dir"]
    )
    done = subprocess.run(command.split(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "events verified" in done.stdout


# -- the day-2 table: every playbook with a researcher's server open (issue #13) -------------

#: one row per playbook run, printed by the test and quoted in docs/sysadmin/day-2.md
TABLE: list[dict[str, object]] = []


def _containers(client: docker.DockerClient) -> tuple[dict, dict]:
    """Service containers (role -> (id, StartedAt, status)) and running notebook servers
    ((user, project) -> id)."""
    services, servers = {}, {}
    for c in client.containers.list(all=True, filters={"label": f"havre.enclave={ENCLAVE}"}):
        if "havre.user" in c.labels:
            if c.status == "running":
                servers[(c.labels["havre.user"], c.labels["havre.project"])] = c.id
        elif c.labels.get("havre.role") not in (None, "notebook", "reexecution"):
            services[c.labels["havre.role"]] = (c.id, c.attrs["State"]["StartedAt"], c.status)
    return services, servers


def _restarted(before: dict, after: dict) -> list[str]:
    """Roles whose container was replaced (another id), or restarted in place (marked)."""
    found = []
    for role in sorted(before.keys() | after.keys()):
        old, new = before.get(role), after.get(role)
        if old is None or new is None or old[0] != new[0]:
            found.append(role)
        elif old != new:
            found.append(f"{role} (same container restarted: {new[2]})")
    return found


def _idp_groups(day2: Deployment) -> dict[str, object]:
    users = json.loads((Path(day2.vars["havre_state_dir"]) / "idp/users.json").read_text())
    return {name: entry.get("groups") for name, entry in users.items()}


def _start_kernel(user: HubUser) -> str:
    user.open_server("cardio")
    xsrf = user.session.cookies.get("_xsrf", path=f"/user/{user.name}/cardio/") or ""
    made = user.session.post(
        user.server_url("cardio", "api/kernels"),
        headers={"X-XSRFToken": xsrf},
        json={"name": "python3"},
        timeout=60,
    )
    assert made.status_code == 201, made.text[:300]
    return made.json()["id"]


def _kernel_answers(user: HubUser, kernel: str) -> bool:
    """The server answers through the proxy with this session, and the kernel is alive."""
    try:
        got = user.session.get(
            user.server_url("cardio", "api/kernels"), timeout=30, allow_redirects=False
        )
    except requests.RequestException:
        return False
    return got.status_code == 200 and kernel in {k["id"] for k in got.json()}


def _wait(condition, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return bool(condition())


def _print_table() -> None:
    columns = ["playbook", "server kept", "answers, same session", "services restarted"]
    columns += ["members kept", "idp groups kept", "changed, 2nd run", "seconds"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for found in TABLE:
        cells = []
        for column in columns:
            value = found.get(column)
            if isinstance(value, bool):
                value = "yes" if value else "**no**"
            elif isinstance(value, list):
                value = ", ".join(value)
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print("\nday-2 table:\n" + text)
    print(json.dumps(TABLE, indent=1, default=str))
    out = os.environ.get("HAVRE_DAY2_TABLE_OUT")
    if out:
        Path(out).write_text(text + "\n\n" + json.dumps(TABLE, indent=1, default=str) + "\n")


#: the services users talk to (the proxy is in the hub's container)
USER_FACING = ("hub", "idp", "egress")


def _user_facing(found: dict, column: str = "services restarted") -> set[str]:
    return {r.split(" ")[0] for r in found.get(column) or []} & set(USER_FACING)


@pytest.mark.docker
def test_day2_table_every_playbook_with_a_server_open(day2):
    """Each playbook in turn on the running enclave while alice has a server with a live
    kernel (and bea one for her removal): which service containers were restarted, whether
    alice's server (same container, same kernel) still answers through the proxy, whether the
    members are kept, what a second run changes."""
    client = docker.from_env(version="auto")
    state = Path(day2.vars["havre_state_dir"])
    alice = day2.user("alice")
    assert alice.start_server("cardio").status_code in (201, 202)
    alice.wait_ready("cardio")
    kernel = _start_kernel(alice)

    def cardio_members() -> list[str]:
        return sorted(day2.config.projects["cardio"].members)

    def row(
        name: str,
        playbook: str,
        extra: dict | None = None,
        *,
        second: bool = True,
        members: list[str] | None = None,
    ) -> dict:
        services, servers = _containers(client)
        expected_members = cardio_members() if members is None else members
        idp_before = _idp_groups(day2)
        run = day2.playbook(playbook, extra=extra)
        assert run.returncode == 0, run.output[-4000:]
        assert _health(day2) == 200
        services_after, servers_after = _containers(client)
        found: dict[str, object] = {
            "playbook": name,
            "server kept": servers_after.get(("alice", "cardio")) == servers[("alice", "cardio")],
            "answers, same session": _kernel_answers(alice, kernel),
            "services restarted": _restarted(services, services_after) or ["none"],
            "members kept": cardio_members() == expected_members,
            "idp groups kept": _idp_groups(day2) == idp_before,
            "changed, 2nd run": "n/a",
            "seconds": round(run.seconds, 1),
            "servers after": sorted(f"{u}/{p}" for u, p in servers_after),
            "changed tasks": run.changed_tasks,
        }
        if second:
            again = day2.playbook(playbook, extra=extra)
            assert again.returncode == 0, again.output[-4000:]
            found["changed, 2nd run"] = again.changed
            found["2nd run changed tasks"] = again.changed_tasks
            found["services restarted by the 2nd run"] = _restarted(
                services_after, _containers(client)[0]
            )
        TABLE.append(found)
        return found

    # a new project: its network (hub and egress attached) and data folder
    r = row(
        "project-add.yml (new project)",
        "project-add.yml",
        {"havre_change_project": "onco", "havre_change_title": "Oncology registry"},
    )
    network = client.networks.get(day2.config.network_name("onco"))
    attached = {c["Name"] for c in network.attrs["Containers"].values()}
    assert {f"{ENCLAVE}-hub", f"{ENCLAVE}-egress"} <= attached, attached
    assert (state / "projects/onco/data").is_dir()
    assert _user_facing(r) == set(), r

    # a retitle: the hub's page shows the new title, nothing restarted
    title = "Cardio day-2 table"
    r = row(
        "project-add.yml (retitle)",
        "project-add.yml",
        {"havre_change_project": "cardio", "havre_change_title": title},
    )
    assert _user_facing(r) == set(), r
    home = alice.session.get(alice.url("hub/home"), timeout=30)
    assert title in home.text, home.text[:2000]

    # bea is in no provider group: refused until member.yml lists her (the attack), let in
    # afterwards with no restart (the control)
    with pytest.raises(HubError, match="login of bea failed: 403"):
        day2.user("bea")
    change = {"havre_change_project": "cardio", "havre_change_member": "bea"}
    r = row(
        "member.yml add",
        "member.yml",
        {**change, "havre_change_action": "add"},
        members=sorted({*cardio_members(), "bea"}),
    )
    assert _user_facing(r) == set(), r
    bea = day2.user("bea")
    assert bea.start_server("cardio").status_code in (201, 202)
    bea.wait_ready("cardio")
    bea.open_server("cardio")

    # removing another user (dave, no server) touches nobody's server
    r = row(
        "member.yml remove (another user)",
        "member.yml",
        {"havre_change_project": "cardio", "havre_change_member": "dave"}
        | {"havre_change_action": "remove"},
        members=sorted(set(cardio_members()) - {"dave"}),
    )
    assert _user_facing(r) == set() and "bea/cardio" in r["servers after"], r

    # removing bea: the membership check stops her server, and only hers
    r = row(
        "member.yml remove (the server's user)",
        "member.yml",
        {**change, "havre_change_action": "remove"},
        members=sorted(set(cardio_members()) - {"bea"}),
    )
    waited = time.monotonic()
    stopped = _wait(lambda: ("bea", "cardio") not in _containers(client)[1])
    r["bea's server stopped"] = stopped
    r["seconds from the playbook's end to her server's stop"] = round(time.monotonic() - waited)
    assert stopped, "bea's server still runs after her removal"
    assert _user_facing(r) == set(), r
    assert ("alice", "cardio") in _containers(client)[1] and _kernel_answers(alice, kernel)

    # secrets rotated: the services restart on purpose (sign-ins end); servers keep running
    r = row("rotate-secrets.yml", "rotate-secrets.yml", second=False)
    r["changed, 2nd run"] = "n/a (new secrets each run)"
    alice = day2.user("alice")  # signs in again
    alice.open_server("cardio")
    r["answers after signing in again"] = _kernel_answers(alice, kernel)
    assert r["answers after signing in again"], r

    # upgrade to the same images: a backup first, nothing else
    row("upgrade.yml (same images)", "upgrade.yml")

    r = row("backup.yml", "backup.yml", second=False)
    r["changed, 2nd run"] = "n/a (a new archive each run)"
    backups = Path(day2.vars["havre_backup_dir"]).glob("*.tar.gz.age")
    archive = max(backups, key=lambda p: p.stat().st_mtime)

    # restore replaces the state folder: the whole enclave is stopped first, servers too
    r = row(
        "restore.yml (that backup, over the running enclave)",
        "restore.yml",
        {
            "havre_restore_archive": str(archive),
            "havre_restore_archive_on_host": True,
            "havre_restore_force": True,
        },
        second=False,
    )
    client.close()
    _print_table()

    # what docs/sysadmin/day-2.md promises
    for found in TABLE:
        name = str(found["playbook"])
        assert found["members kept"] and found["idp groups kept"], found
        if name.startswith("restore"):
            assert not found["server kept"], found  # said in the docs: a maintenance window
            continue
        assert found["server kept"], found
        if not name.startswith("rotate"):
            assert found["answers, same session"], found
        if _user_facing(found, "services restarted by the 2nd run"):
            raise AssertionError(f"a second run restarted something: {found}")
        if name.startswith("upgrade"):  # the backup it takes first: a new archive each run
            assert all(t.startswith("TASK [havre_backup") for t in found["2nd run changed tasks"])
        elif isinstance(found["changed, 2nd run"], int):
            assert found["changed, 2nd run"] == 0, found
    assert r["services restarted"] != ["none"]


@pytest.mark.docker
def test_teardown_removes_everything_it_made(day2):
    client = docker.from_env(version="auto")
    refused = day2.playbook("teardown.yml")
    assert refused.returncode != 0 and "without confirmation" in refused.output
    assert _service_ids(client)  # still there

    backups = Path(day2.vars["havre_backup_dir"])
    archives_before = set(backups.glob("*.tar.gz.age"))
    run = day2.playbook(
        "teardown.yml",
        extra={"havre_teardown_confirm": ENCLAVE, "havre_teardown_state": True},
    )
    assert run.returncode == 0, run.output[-3000:]
    TIMES["teardown.yml"] = round(run.seconds, 1)
    label = {"label": f"havre.enclave={ENCLAVE}"}
    assert not client.containers.list(all=True, filters=label)
    assert not client.networks.list(filters=label)
    assert not Path(day2.vars["havre_state_dir"]).exists()
    assert not Path(day2.vars["havre_config_dir"]).exists()
    assert set(backups.glob("*.tar.gz.age")) - archives_before  # the backup taken first is kept
    firewall = [day2.vars[k] for k in ("havre_firewall_dir", "havre_firewall_script")]
    firewall.append(day2.vars["havre_firewall_unit"])
    others = {
        c.labels["havre.enclave"]
        for c in client.containers.list(all=True, filters={"label": "havre.enclave"})
    }
    if others:  # another enclave on this host still needs the host firewall: kept, and said
        assert "the host firewall (still used by" in run.output
        assert all(Path(p).exists() for p in firewall)
    else:
        assert not any(Path(p).exists() for p in firewall)
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
        assert "HAVRE-INPUT" not in rules
    client.close()
