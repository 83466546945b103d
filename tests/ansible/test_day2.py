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
)
from tests.enclave_fixtures import free_port

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
    password = secrets.token_urlsafe(12)
    variables = {
        "havre_enclave_name": ENCLAVE,
        "havre_state_dir": str(root / "state"),
        "havre_config_dir": str(root / "etc"),
        "havre_backup_dir": str(root / "backups"),
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
        "havre_identity": {"provider": "embedded", "checker_groups": ["output-checkers"]},
        "havre_idp_users": [{"name": "alice", "password": password, "groups": ["project-cardio"]}],
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
    made = Deployment(root, inventory, vars_file, variables, {"alice": password})
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
    assert [p.suffix for p in copies] == [".gz", ".sha256"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in copies} == {0o600}, [
        oct(p.stat().st_mode) for p in copies
    ]

    backups = Path(day2.vars["havre_backup_dir"])
    good = _archive_bytes(backups)
    (archive,) = backups.glob("*.tar.gz")
    tampered = day2.root / "tampered" / archive.name  # the same name as the host's good one
    tampered.parent.mkdir()
    _tampered_copy(archive, tampered)
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


@pytest.mark.docker
def test_teardown_removes_everything_it_made(day2):
    client = docker.from_env(version="auto")
    refused = day2.playbook("teardown.yml")
    assert refused.returncode != 0 and "without confirmation" in refused.output
    assert _service_ids(client)  # still there

    backups = Path(day2.vars["havre_backup_dir"])
    archives_before = set(backups.glob("*.tar.gz"))
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
    assert set(backups.glob("*.tar.gz")) - archives_before  # the backup taken first is kept
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
