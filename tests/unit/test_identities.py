"""Per-server uids and per-project gids (havre/enclave/identities.py): stable, distinct, never a
host id, bad names refused, the table written atomically and never silently reset."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from havre.enclave.config import parse_enclave_yaml
from havre.enclave.identities import (
    DEFAULT_BASE,
    HostIds,
    Identity,
    IdentityError,
    IdentityTable,
    apply_rule,
    home_plan,
    load_table,
    locked_table,
    migrate_tree,
    owners_of,
    parse_host_ids,
    project_plan,
    range_problems,
    save_table,
    table_path,
)

PASSWD = """root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
alice:x:1000:1000::/home/alice:/bin/bash
squat:x:2000002:2000002::/home/squat:/bin/bash
"""


def test_ids_are_distinct_and_stable_across_loads(tmp_path: Path) -> None:
    path = table_path(tmp_path)
    with locked_table(path) as table:
        a = table.identity("alice", "cardio")
        b = table.identity("bob", "cardio")
        c = table.identity("alice", "diabetes")
    assert len({a.uid, b.uid, c.uid, a.gid, c.gid}) == 5
    assert a.gid == b.gid  # one group per project
    assert a.gid != c.gid
    with locked_table(path) as again:  # "restart": read back from the file
        assert again.identity("alice", "cardio") == a
        assert again.identity("alice", "diabetes") == c
        d = again.identity("dave", "cardio")
    assert d.uid not in {a.uid, b.uid, c.uid, a.gid, c.gid}
    assert all(n >= DEFAULT_BASE for n in (a.uid, b.uid, c.uid, d.uid, a.gid, c.gid))


def test_host_accounts_and_subordinate_ranges_are_skipped() -> None:
    host = parse_host_ids(PASSWD, "", "", "")
    table = IdentityTable()
    got = [table.identity(f"u{i}", "p", host).uid for i in range(5)]
    assert 2_000_002 not in got  # control: squat's uid is inside the range and is skipped
    assert not any(host.used(n) for n in got)
    # a subordinate range inside Havre's range is refused outright by range_problems
    sub = parse_host_ids("", "", "podman:2000100:65536\n", "")
    assert any("subordinate" in p for p in range_problems(DEFAULT_BASE, 1_000_000, sub))
    assert not range_problems(DEFAULT_BASE, 1_000_000, parse_host_ids("", "", "x:100000:65536", ""))
    assert not range_problems(3_000_000, 1_000, sub)  # control: a free range passes


def test_range_refuses_host_accounts_and_low_bases() -> None:
    host = parse_host_ids(PASSWD)
    problems = range_problems(DEFAULT_BASE, 1_000_000, host)
    assert any("2000002" in p for p in problems)
    assert any("below 65536" in p for p in range_problems(1000, 100, HostIds()))
    assert range_problems(DEFAULT_BASE, 1_000_000, HostIds()) == []  # control


def test_this_hosts_accounts_are_outside_the_default_range() -> None:
    from havre.enclave.identities import read_host_ids

    host = read_host_ids()
    assert os.getuid() not in range(DEFAULT_BASE, DEFAULT_BASE + 1_000_000)
    assert range_problems(DEFAULT_BASE, 1_000_000, host) == [], range_problems(
        DEFAULT_BASE, 1_000_000, host
    )


@pytest.mark.parametrize(
    ("user", "project"),
    [
        ("../root", "cardio"),
        ("alice", "../x"),
        ("", "cardio"),
        ("alice", "Cardio"),
        ("al/ice", "cardio"),
        ("alice", ""),
        (3, "cardio"),
    ],
)
def test_bad_names_are_refused_with_a_sentence(user: object, project: object) -> None:
    table = IdentityTable()
    with pytest.raises(IdentityError, match=r"is not a (user|project) name"):
        table.identity(user, project)  # type: ignore[arg-type]
    assert table.servers == {} and table.projects in ({}, {"cardio": DEFAULT_BASE})


def test_an_id_is_never_given_twice_even_after_removal(tmp_path: Path) -> None:
    path = table_path(tmp_path)
    with locked_table(path) as table:
        gone = table.identity("alice", "cardio").uid
        del table.servers["alice/cardio"]
    with locked_table(path) as table:
        assert table.identity("bob", "cardio").uid != gone


def test_range_exhausted_is_a_clear_error() -> None:
    table = IdentityTable(base=100_000, size=2, next_id=100_000)
    table.identity("a", "p")  # gid + uid
    with pytest.raises(IdentityError, match="used up"):
        table.identity("b", "p")


def test_table_file_is_atomic_private_and_damage_is_refused(tmp_path: Path) -> None:
    path = table_path(tmp_path)
    with locked_table(path) as table:
        table.identity("alice", "cardio")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    save_table(load_table(path), path, reader_gid=os.getgid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    good = path.read_text()
    for damaged in ("{", json.dumps({"schema": "other"}), good.replace('"servers"', '"x"')):
        path.write_text(damaged)
        with pytest.raises(IdentityError, match="damaged"):
            load_table(path)
    doc = json.loads(good)
    doc["servers"]["bob/cardio"] = doc["projects"]["cardio"]  # an id given twice
    path.write_text(json.dumps(doc))
    with pytest.raises(IdentityError, match="damaged"):
        load_table(path)
    path.write_text(good)
    with pytest.raises(IdentityError, match="can't move"):
        load_table(path, base=3_000_000)
    assert load_table(path).servers  # control: the good table loads


def test_an_exception_inside_the_lock_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = table_path(tmp_path)
    with locked_table(path) as table:
        table.identity("alice", "cardio")
    before = path.read_bytes()
    with pytest.raises(RuntimeError), locked_table(path) as table:
        table.identity("bob", "cardio")
        raise RuntimeError("crash mid-operation")
    assert path.read_bytes() == before


def test_concurrent_allocations_never_share_an_id(tmp_path: Path) -> None:
    path = table_path(tmp_path)
    got: list[int] = []

    def one(i: int) -> None:
        with locked_table(path) as table:
            got.append(table.identity(f"user{i}", "cardio").uid)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 16
    assert len(load_table(path).servers) == 16


def test_owners_of_maps_uid_to_user(tmp_path: Path) -> None:
    path = table_path(tmp_path)
    assert owners_of(path) == {}
    with locked_table(path) as table:
        a = table.identity("alice", "cardio")
        b = table.identity("bob", "cardio")
    assert owners_of(path) == {a.uid: "alice", b.uid: "bob"}
    assert load_table(path).owner_of(b.uid) == ("bob", "cardio")
    assert load_table(path).owner_of(1000) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to other uids)")
def test_folder_plan_owners_and_modes(tmp_path: Path) -> None:
    project = tmp_path / "projects" / "cardio"
    (project / "data").mkdir(parents=True)
    (project / "data" / "x.csv").write_text("a\n")
    os.chmod(project / "data" / "x.csv", 0o644)
    for rule in project_plan(project, project / "data", 2_000_000):
        apply_rule(rule)
    assert stat.S_IMODE((project / "outputs").stat().st_mode) == 0o3570
    assert (project / "outputs").stat().st_uid == 1001
    assert (project / "data" / "x.csv").stat().st_gid == 2_000_000
    assert stat.S_IMODE((project / "data" / "x.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE((project / "homes").stat().st_mode) == 0o700
    home = project / "homes" / "alice"
    home.mkdir()
    (home / "nb.ipynb").write_text("{}")
    os.symlink("/etc/passwd", home / "link")
    for path in (home, home / "nb.ipynb"):
        os.chown(path, 1000, 1000)
    os.lchown(home / "link", 1000, 1000)
    ident = Identity("alice", "cardio", 2_000_001, 2_000_000)
    assert migrate_tree(home, 1000, ident) == 3
    assert Path("/etc/passwd").stat().st_uid == 0  # the link was not followed
    for rule in home_plan(home, ident):
        apply_rule(rule)
    assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (2_000_001, 0o700)
    assert (home / "nb.ipynb").stat().st_uid == 2_000_001


def test_enclave_config_range_and_filesystems_are_validated() -> None:
    base = "images: {default: 'havre-notebook:1'}\nprojects: {pp: {title: P, members: [aa]}}\n"
    cfg = parse_enclave_yaml(base)
    assert (cfg.uid_base, cfg.uid_count, cfg.project_filesystems) == (
        2_000_000,
        1_000_000,
        "shared",
    )
    cfg = parse_enclave_yaml(
        "enclave: {uid_base: 5000000, uid_count: 1000, project_filesystems: loop}\n" + base
    )
    assert (cfg.uid_base, cfg.uid_count, cfg.project_filesystems) == (5_000_000, 1000, "loop")
    for bad, words in (
        ("uid_base: 1000", "at least 65536"),
        ("uid_base: x", "positive whole number"),
        ("project_filesystems: zfs", "must be one of"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_enclave_yaml(f"enclave: {{{bad}}}\n" + base)


def test_a_colleagues_session_folder_is_refused_with_a_sentence(tmp_path: Path) -> None:
    """The safe library (in every notebook server) can't replace a session folder another
    member made: it says so and names a way out. Control: one's own folder is replaced."""
    from havre import safe

    mine = tmp_path / "outputs" / "getting-started"
    mine.mkdir(parents=True)
    safe.new_session(tmp_path / "outputs", name="getting-started", replace=True, show=False)
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to another uid)")
    os.chown(mine, 2_000_099, 2_000_000)
    with pytest.raises(PermissionError, match="made by another member of the project"):
        safe.new_session(tmp_path / "outputs", name="getting-started", replace=True, show=False)
    with pytest.raises(PermissionError, match="getting-started-"):
        safe.new_session(tmp_path / "outputs", name="getting-started", resume=True, show=False)
