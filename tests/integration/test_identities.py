"""Distinct identities (issue #14), through the real hub, real notebook servers and the real
egress service: each (user, project) server runs as a uid of its own that no host account
uses; two members of a project can't overwrite or delete each other's outputs while the egress
service reads both and names each file's owner; project data on the host is readable by the
project's group only. Every refusal has its control (the owner, the member, the old uid)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from havre.enclave.identities import load_table, read_host_ids, table_path
from tests.integration.servers import servers_running
from tests.integration.test_egress_flow import Egress

pytestmark = pytest.mark.docker

TABLE = "region,cases\nBretagne,40\nOccitanie,55\nNormandie,23\n"
IDS = "import os, json; print(json.dumps([os.getuid(), os.getgid(), os.getgroups()]))"


@pytest.fixture(scope="module")
def carol_servers(enclave):
    """Carol's two servers (cardio with alice, and diabetes)."""
    with servers_running(enclave.user("carol"), ("cardio", "diabetes")) as carol:
        yield carol


def _ids(user, project: str) -> tuple[int, int, list[int]]:
    out = user.run_code(project, IDS)
    assert out["error"] is None, out
    uid, gid, groups = json.loads(out["stdout"])
    return uid, gid, groups


def test_each_server_runs_as_a_uid_of_its_own_that_no_host_account_uses(
    enclave, alice_cardio, carol_servers
):
    alice, _ = alice_cardio
    a = _ids(alice, "cardio")
    c1 = _ids(carol_servers, "cardio")
    c2 = _ids(carol_servers, "diabetes")
    print(f"\nalice/cardio {a}, carol/cardio {c1}, carol/diabetes {c2}")
    assert len({a[0], c1[0], c2[0]}) == 3  # a uid per (user, project)
    assert a[1] == c1[1] != c2[1]  # a gid per project
    host = read_host_ids()
    base, top = enclave.config.uid_base, enclave.config.uid_base + enclave.config.uid_count
    for uid, gid, groups in (a, c1, c2):
        assert base <= uid < top and base <= gid < top
        assert uid not in host.uids and gid not in host.gids and not host.used(uid)
        assert 0 not in groups and 1000 not in groups
    # control: the probe does see host accounts (uid 0 always; the old notebook uid 1000 was one
    # on a typical host) -- so "not a host account" above is not vacuous
    assert 0 in host.uids
    # the identity table says the same, and is not readable by the servers' uids
    table = load_table(
        table_path(enclave.config.state_dir), enclave.config.uid_base, enclave.config.uid_count
    )
    assert table.identity("alice", "cardio").uid == a[0]
    assert table.identity("carol", "diabetes").uid == c2[0]
    mode = stat.S_IMODE(table_path(enclave.config.state_dir).stat().st_mode)
    assert mode & 0o007 == 0, oct(mode)
    # the container's labels carry the uid the hub gave it
    container = enclave.notebook_container("carol", "diabetes")
    assert container.labels["havre.uid"] == str(c2[0])


def test_a_member_cannot_overwrite_delete_or_replace_a_colleagues_output(
    enclave, alice_cardio, carol_servers
):
    alice, _ = alice_cardio
    carol = carol_servers
    out = alice.run_code("cardio", f"open('outputs/alice_table.csv','w').write({TABLE!r})")
    assert out["error"] is None, out
    attack = f"""
import os
tried = {{}}
for name, action in [
    ("overwrite", lambda: open('outputs/alice_table.csv', 'w').write('x')),
    ("append", lambda: open('outputs/alice_table.csv', 'a').write('x')),
    ("delete", lambda: os.remove('outputs/alice_table.csv')),
    ("replace", lambda: (open('outputs/mine.csv', 'w').write('y'),
                         os.replace('outputs/mine.csv', 'outputs/alice_table.csv'))),
    ("chmod", lambda: os.chmod('outputs/alice_table.csv', 0o666)),
]:
    try:
        action()
        tried[name] = "done"
    except OSError as err:
        tried[name] = type(err).__name__
print(tried)
print(open('outputs/alice_table.csv').read() == {TABLE!r})
"""
    out = carol.run_code("cardio", attack)
    assert out["error"] is None, out
    tried, intact = out["stdout"].strip().splitlines()
    print(f"\ncarol against alice's output: {tried}")
    for name in ("overwrite", "append", "delete", "replace", "chmod"):
        assert f"'{name}': 'PermissionError'" in tried, tried
    assert intact == "True"  # and she can read it (same project, same group)
    path = enclave.config.outputs_dir("cardio") / "alice_table.csv"
    assert path.read_text() == TABLE
    # control: the owner can do each of these to her own file
    control = """
import os
open('outputs/alice_table.csv', 'a').write('')
os.chmod('outputs/alice_table.csv', 0o644)
open('outputs/tmp.csv', 'w').write('z'); os.replace('outputs/tmp.csv', 'outputs/alice_scratch.csv')
os.remove('outputs/alice_scratch.csv')
print('owner ok')
"""
    out = alice.run_code("cardio", control)
    assert out["stdout"].strip() == "owner ok", out
    # carol's own file went in next to it, owned by her uid
    assert (enclave.config.outputs_dir("cardio") / "mine.csv").exists()


def test_egress_reads_both_members_files_and_names_each_owner(enclave, alice_cardio, carol_servers):
    alice, _ = alice_cardio
    carol = carol_servers
    out = alice.run_code("cardio", f"open('outputs/by_alice.csv','w').write({TABLE!r})")
    assert out["error"] is None, out
    out = carol.run_code("cardio", f"open('outputs/planted.csv','w').write({TABLE!r})")
    assert out["error"] is None, out
    researcher = Egress(alice)
    rid = researcher.ok("POST", "api/requests", 201, json={"project": "cardio", "title": "Owners"})[
        "id"
    ]
    researcher.ok("POST", f"api/requests/{rid}/files", 201, json={"path": "by_alice.csv"})
    researcher.ok("POST", f"api/requests/{rid}/files", 201, json={"path": "planted.csv"})
    detail = researcher.ok("GET", f"api/requests/{rid}")
    owners = {f["path"]: f["check"]["owner"] for f in detail["files"]}
    print(f"\nowners in alice's request: {owners}")
    assert owners["planted.csv"]["user"] == "carol"  # a colleague's file, attributed to her
    assert owners["by_alice.csv"]["user"] == "alice"  # control: the author's own file
    page = alice.session.get(researcher.base + f"requests/{rid}", timeout=30)
    assert page.status_code == 200
    assert "owned by carol</strong>, not by alice" in page.text
    assert "written by alice" in page.text
    # the egress service itself reads them as its own uid, without any project's group
    egress = enclave.egress_container()
    code, output = egress.exec_run(["id", "-G"])
    print(f"egress groups: {output.decode().strip()}")
    groups = {int(g) for g in output.decode().split()}
    assert code == 0 and not groups & set(
        load_table(
            table_path(enclave.config.state_dir), enclave.config.uid_base, enclave.config.uid_count
        ).projects.values()
    )


def test_project_data_on_the_host_is_readable_by_the_project_group_only(
    enclave, alice_cardio, tmp_path
):
    config = enclave.config
    data = config.project("cardio").data_path
    csv = data / "hospital_stays.csv"
    gid = load_table(table_path(config.state_dir), config.uid_base, config.uid_count).projects[
        "cardio"
    ]
    for path, mode in ((data, 0o750), (csv, 0o640), (config.project_dir("cardio"), 0o751)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, mode), path
    homes = config.project_dir("cardio") / "homes"
    assert stat.S_IMODE(homes.stat().st_mode) == 0o700
    home = config.home_dir("cardio", "alice")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    image = enclave.notebook_container("alice", "cardio").image.id

    def read_as(user: str, folder: Path) -> tuple[int, str]:
        out = enclave.docker.containers.run(
            image,
            ["sh", "-c", "cat /x/hospital_stays.csv | head -c 20; echo; exit 0"],
            user=user,
            volumes={str(folder): {"bind": "/x", "mode": "ro"}},
            network_disabled=True,
            remove=True,
            stderr=True,
        )
        return 0, out.decode(errors="replace")

    # an unrelated uid (another project's server, a host account such as 1000): refused
    other_gid = load_table(
        table_path(config.state_dir), config.uid_base, config.uid_count
    ).projects["diabetes"]
    for who in (f"{config.uid_base + 999_000}:{other_gid}", "1000:1000", "65534:65534"):
        _, text = read_as(who, data)
        assert "Permission denied" in text, (who, text)
    # control: the same probe against a copy with the old modes (root, 0755/0644) reads it
    old = tmp_path / "old-data"
    old.mkdir()
    (old / "hospital_stays.csv").write_bytes(csv.read_bytes())
    os.chmod(old, 0o755)
    os.chmod(old / "hospital_stays.csv", 0o644)
    _, text = read_as(f"{config.uid_base + 999_000}:{other_gid}", old)
    assert "Permission denied" not in text and "," in text, text
    # control: the project's servers' group reads it, and so does alice's running server
    _, text = read_as(f"{config.uid_base + 999_000}:{gid}", data)
    assert "Permission denied" not in text and "," in text, text
    alice, _ = alice_cardio
    out = alice.run_code("cardio", "print(open('/data/hospital_stays.csv').readline()[:7])")
    assert out["error"] is None and out["stdout"].strip(), out


def test_a_home_made_by_the_old_uid_1000_is_given_to_the_servers_uid(enclave):
    """Upgrading: a home (and its files) owned by uid 1000, from before per-server identities,
    belongs to the member's own uid once her server starts, and she can write in it.
    Control: before the start, her server's uid could not have written there (0700, 1000)."""
    import os

    config = enclave.config
    home = config.home_dir("cardio", "chloe")
    (home / "analysis").mkdir(parents=True, exist_ok=True)
    (home / "analysis" / "notes.txt").write_text("from before")
    for root, dirs, files in os.walk(home):  # everything as uid 1000 left it
        for path in [Path(root)] + [Path(root) / n for n in dirs + files]:
            os.lchown(path, 1000, 1000)
    os.chmod(home, 0o700)
    chloe = enclave.user("chloe")
    r = chloe.start_server("cardio")
    assert r.status_code in (201, 202), r.text
    try:
        chloe.wait_ready("cardio")
        out = chloe.run_code(
            "cardio",
            "import os; open('analysis/notes.txt','a').write(' and after'); "
            "print(open('analysis/notes.txt').read(), os.getuid())",
        )
        assert out["error"] is None, out
        text, uid = out["stdout"].strip().rsplit(" ", 1)
        assert text == "from before and after"
        assert int(uid) >= config.uid_base
        for path in (home, home / "analysis", home / "analysis" / "notes.txt"):
            assert path.stat().st_uid == int(uid), path
    finally:
        chloe.stop_server("cardio")
