"""Project servers through the real hub: who may start what, and what a server holds."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.docker


def test_member_runs_code_in_a_kernel_that_reads_data_and_cannot_write_it(alice_cardio):
    alice, _container = alice_cardio
    out = alice.run_code(
        "cardio",
        "import csv\n"
        "rows = list(csv.DictReader(open('/data/hospital_stays.csv')))\n"
        "print('rows', len(rows), sorted(rows[0])[:2])\n"
        "try:\n"
        "    open('/data/planted.csv', 'w')\n"
        "    print('WROTE')\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n",
    )
    assert out["error"] is None, out
    assert "rows 5000 ['age_band', 'cost_eur']" in out["stdout"]
    assert "refused 30" in out["stdout"]  # EROFS: read-only file system
    assert "WROTE" not in out["stdout"]


def test_server_is_at_the_project_url_on_the_project_network(enclave, alice_cardio):
    _alice, container = alice_cardio
    container.reload()
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [enclave.config.network_name("cardio")]
    assert container.labels["havre.project"] == "cardio"


@pytest.mark.parametrize(
    ("user", "owner", "project", "expected"),
    [
        ("bob", "bob", "cardio", 403),  # not a member of cardio
        ("bob", "bob", "no-such-project", 403),  # unknown project: same answer
        ("bob", "alice", "cardio", 404),  # someone else's server: the hub doesn't say it exists
        ("olivia", "olivia", "cardio", 403),  # a checker is not a project member
        ("bob", "bob", "", 400),  # the default (project-less) server
    ],
)
def test_non_member_is_refused_and_no_container_appears(enclave, user, owner, project, expected):
    session = enclave.user(user)
    before = {c.name for c in enclave.docker.containers.list(all=True)}
    path = f"users/{owner}/servers/{project}" if project else f"users/{owner}/server"
    r = session.api("POST", path)
    assert r.status_code == expected, (r.status_code, r.text)
    after = {c.name for c in enclave.docker.containers.list(all=True)}
    assert after - before == set()  # nothing new (others may vanish: auto-removed on stop)
    if owner == user:
        assert enclave.notebook_container(owner, project or "") is None
        # the refused attempt leaves no server record behind on the hub
        deadline = time.monotonic() + 10
        while project and project in (session.api("GET", f"users/{user}").json()["servers"]):
            assert time.monotonic() < deadline, "the refused server is still listed"
            time.sleep(0.2)


def test_refused_attempts_do_not_use_up_a_members_servers(enclave):
    """Many refused attempts, then the member's own project still starts."""
    bob = enclave.user("bob")
    refused = ("cardio", "secret-one", "secret-two", "secret-three")
    for project in refused:
        assert bob.start_server(project).status_code == 403
    deadline = time.monotonic() + 30  # the hub forgets refused records in the background
    while set(refused) & set(bob.api("GET", "users/bob").json()["servers"]):
        assert time.monotonic() < deadline, "refused servers are still listed"
        time.sleep(0.2)
    r = bob.start_server("diabetes")
    assert r.status_code in (201, 202), r.text
    bob.wait_ready("diabetes")
    bob.stop_server("diabetes")


def test_member_of_two_projects_gets_two_isolated_servers_and_homes_survive_a_stop(enclave):
    carol = enclave.user("carol")
    for project in ("cardio", "diabetes"):
        assert carol.start_server(project).status_code in (201, 202)
    for project in ("cardio", "diabetes"):
        carol.wait_ready(project)
    out = carol.run_code(
        "cardio", "open('note.txt','w').write('kept'); print(open('/etc/hostname').read())"
    )
    assert out["error"] is None and "cardio" in out["stdout"]
    out = carol.run_code("diabetes", "import os; print(os.path.exists('note.txt'))")
    assert out["stdout"].strip() == "False"  # homes are per project

    carol.stop_server("cardio")
    assert enclave.wait_container_gone("carol", "cardio")  # container removed on stop
    assert (enclave.config.home_dir("cardio", "carol") / "note.txt").read_text() == "kept"

    assert carol.start_server("cardio").status_code in (201, 202)
    carol.wait_ready("cardio")
    out = carol.run_code("cardio", "print(open('note.txt').read())")
    assert out["stdout"].strip() == "kept"
    for project in ("cardio", "diabetes"):
        carol.stop_server(project)


def test_outputs_folder_is_shared_with_the_egress_service_read_only(enclave, alice_cardio):
    alice, _container = alice_cardio
    out = alice.run_code(
        "cardio", "open('outputs/table.csv','w').write('region,n\\nA,12\\n'); print('ok')"
    )
    assert out["stdout"].strip() == "ok", out
    egress = enclave.egress_container()
    path = enclave.config.outputs_dir("cardio") / "table.csv"
    code, output = egress.exec_run(["cat", str(path)])
    assert code == 0 and output.decode() == "region,n\nA,12\n"
    code, output = egress.exec_run(["sh", "-c", f"echo x >> {path}"])
    assert code != 0, output  # the egress service can read outputs, never change them
    # ...and not only because of the file's owner and mode: as the file's owner (whom the mode
    # lets write), the egress container's mount still refuses (EROFS)
    st = path.stat()  # the server's own uid and its project's gid (havre/enclave/identities.py)
    owner = f"{st.st_uid}:{st.st_gid}"
    code, output = egress.exec_run(["sh", "-c", f"echo x >> {path}"], user=owner)
    assert code != 0 and "Read-only file system" in output.decode(), output
    assert path.read_text() == "region,n\nA,12\n"


def test_hub_refuses_to_start_on_an_invalid_config(enclave, tmp_path):
    bad = tmp_path / "enclave.yaml"
    bad.write_text("projects:\n  Bad_Slug:\n    title: x\n    members: [alice]\n")
    container = enclave.docker.containers.run(
        enclave.hub_container().image.id,
        detach=True,
        environment={"HAVRE_CONFIG": "/etc/havre/enclave.yaml"},
        volumes={str(bad): {"bind": "/etc/havre/enclave.yaml", "mode": "ro"}},
        network_disabled=True,
    )
    try:
        result = container.wait(timeout=60)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert result["StatusCode"] != 0
    assert "refusing to start" in logs
    assert "Bad_Slug" in logs


def test_starting_the_enclave_again_changes_nothing(enclave, alice_cardio):
    """`havre up` twice is harmless: same hub and egress containers, servers keep running."""
    from havre.host import stack

    alice, notebook = alice_cardio
    before = (enclave.hub_container().id, enclave.egress_container().id)
    assert stack.up(enclave.config, enclave.options) == enclave.url
    assert (enclave.hub_container().id, enclave.egress_container().id) == before
    notebook.reload()
    assert notebook.status == "running"
    assert alice.run_code("cardio", "print(1 + 1)")["stdout"].strip() == "2"


#: Run in the member's container (as its user): which packages' compiled modules are mapped in
#: the server process (havre-singleuser), and in this probe's own process after importing
#: JupyterHub's single-user extension the plain way (the control: the probe sees SQLAlchemy
#: when it is loaded).
SERVER_IMPORTS_PROBE = r"""
import json, os, re
def packages(maps):
    return sorted({m.group(1) for m in re.finditer(r"site-packages/([A-Za-z0-9_]+)/", maps)})
server = None
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if any(part.endswith(b"havre-singleuser") for part in cmdline):
        server = packages(open(f"/proc/{pid}/maps").read())
import jupyterhub.singleuser.extension
print("PROBE-RESULT " + json.dumps({
    "server": server, "plain": packages(open("/proc/self/maps").read()),
}))
"""


def test_a_served_server_never_loads_the_hub_database_layer(alice_cardio):
    """`havre-singleuser` (havre/notebook/singleuser.py) leaves SQLAlchemy out of the server;
    after the server has served the hub's OAuth sign-in, its API and a kernel, nothing it ran
    needed it: not loaded, and no "used after all" line in its log."""
    alice, container = alice_cardio
    out = alice.run_code("cardio", "print(6 * 7)")
    assert out["error"] is None and "42" in out["stdout"], out
    code, output = container.exec_run(["python3", "-c", SERVER_IMPORTS_PROBE])
    text = output.decode(errors="replace")
    assert code == 0, text
    result = json.loads(text.split("PROBE-RESULT ", 1)[1])
    assert result["server"] is not None, "no havre-singleuser process in the container"
    assert "aiohttp" in result["server"]  # compiled modules it does use are seen
    assert "sqlalchemy" not in result["server"]
    assert "sqlalchemy" in result["plain"]  # control: the plain import maps it
    assert "used after all" not in container.logs().decode(errors="replace")
