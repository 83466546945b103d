"""Backups are encrypted with age; a changed archive or the wrong identity restores nothing.

``ansible/roles/havre_common/files/havre_archive.py`` (the backup, restore and move roles'
tool) run for real, with Debian's ``age``: the archive is written encrypted to the operator's
recipients (no plain byte of the state in it), restore with the identity gives the state back
byte for byte (control), and each attack -- the wrong identity, one byte changed in the
ciphertext (with its ``.sha256`` recomputed, so age's own authentication is what refuses it),
no identity at all -- is refused with a sentence while the target's state, data and audit log
stay byte-identical, even with ``--force`` (restore over a live state folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "ansible" / "roles" / "havre_common" / "files" / "havre_archive.py"
SECRET = b"signing-key-material-that-must-never-appear-in-clear"


def _need_age() -> None:
    if not shutil.which("age") or not shutil.which("age-keygen"):
        pytest.fail("age is missing: scripts/lib/python-env.sh installs it (apt-get install age)")


def _tool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def _keypair(path: Path) -> str:
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def _make_state(state: Path) -> None:
    (state / "secrets").mkdir(parents=True)
    (state / "secrets" / "signing.key").write_bytes(SECRET)
    (state / "egress").mkdir()
    (state / "egress" / "audit.jsonl").write_text('{"seq": 1, "event": "created"}\n')
    (state / "egress" / "audit-checkpoints.jsonl").write_text('{"seq": 1}\n')
    with sqlite3.connect(state / "egress" / "egress.db") as db:
        db.execute("create table requests (id integer primary key, title text)")
        db.execute("insert into requests (title) values ('tables for paper 1')")
    (state / "projects" / "p1" / "outputs").mkdir(parents=True)
    (state / "projects" / "p1" / "outputs" / "t.csv").write_text("a,b\n1,2\n")


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _need_age()
    root = tmp_path_factory.mktemp("age")
    operator = _keypair(root / "operator.key")
    _keypair(root / "stranger.key")
    (root / "recipients.txt").write_text(f"# the operators' keys\n{operator}\n")
    state = root / "state"
    _make_state(state)
    (root / "enclave.yaml").write_text("enclave: {name: t}\n")
    archive = root / "backups" / "t.tar.gz.age"
    made = _tool(
        "create", "--state", state, "--config", root / "enclave.yaml", "--output", archive,
        "--recipients-file", root / "recipients.txt",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return root, state, archive


def test_the_archive_is_age_ciphertext_with_no_plain_byte_of_the_state(world):
    _root, _state, archive = world
    data = archive.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert SECRET not in data and b"tables for paper 1" not in data
    assert b"\x1f\x8b" not in data[:64]  # not a gzip stream either
    assert oct(archive.stat().st_mode & 0o777) == "0o600"


def test_restore_with_the_identity_gives_the_state_back(world, tmp_path):
    root, state, archive = world
    # the archive records its state folder: a move keeps the path, so restore into a copy of it
    moved = _tool(
        "restore", archive, "--state", state, "--config", tmp_path / "enclave.yaml",
        "--identity", root / "operator.key", "--force",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert _snapshot(state)["secrets/signing.key"] == hashlib.sha256(SECRET).hexdigest()
    assert (tmp_path / "enclave.yaml").read_text() == "enclave: {name: t}\n"
    checked = _tool("verify", archive, "--identity", root / "operator.key")
    assert checked.returncode == 0, checked.stderr
    assert not list(archive.parent.glob(".havre-*"))  # the decrypted copy is gone


def _live_target(root: Path, state: Path) -> dict[str, str]:
    """The state folder as a running enclave has it after the backup: more work was done."""
    (state / "egress" / "audit.jsonl").write_text(
        '{"seq": 1, "event": "created"}\n{"seq": 2, "event": "released"}\n'
    )
    (state / "projects" / "p1" / "outputs" / "new.csv").write_text("c\n3\n")
    return _snapshot(state) | {"config": hashlib.sha256(b"live config\n").hexdigest()}


@pytest.mark.parametrize("attack", ["wrong identity", "changed byte", "no identity"])
def test_a_refused_restore_leaves_state_data_and_audit_log_byte_identical(world, tmp_path, attack):
    root, state, archive = world
    config = tmp_path / "enclave.yaml"
    config.write_text("live config\n")
    before = _live_target(root, state)
    candidate, identity = archive, root / "operator.key"
    if attack == "wrong identity":
        identity = root / "stranger.key"
    elif attack == "changed byte":
        candidate = tmp_path / archive.name
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0x01
        candidate.write_bytes(bytes(data))
        digest = hashlib.sha256(bytes(data)).hexdigest()
        Path(f"{candidate}.sha256").write_text(f"{digest}  {candidate.name}\n")
    args = ["restore", candidate, "--state", state, "--config", config, "--force"]
    if attack != "no identity":
        args += ["--identity", identity]
    refused = _tool(*args)
    assert refused.returncode == 1
    expected = {
        "wrong identity": f"REFUSED: {candidate} was not encrypted to the identity in {identity}",
        "changed byte": f"REFUSED: {candidate} could not be decrypted: it was changed or is",
        "no identity": f"REFUSED: {candidate} is encrypted with age: give the identity file",
    }[attack]
    assert expected in refused.stderr
    after = _snapshot(state) | {"config": hashlib.sha256(config.read_bytes()).hexdigest()}
    assert after == before
    assert not list(candidate.parent.glob(".havre-*"))
    # control: the same restore with the operator's identity and the untouched archive writes
    restored = _tool(
        "restore", archive, "--state", state, "--config", config, "--force",
        "--identity", root / "operator.key",
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert _snapshot(state) != {k: v for k, v in before.items() if k != "config"}
    assert (state / "egress" / "audit.jsonl").read_text() == '{"seq": 1, "event": "created"}\n'


def test_a_plain_archive_needs_an_explicit_choice_and_warns(world, tmp_path):
    root, state, _archive = world
    out = tmp_path / "plain.tar.gz"
    base = ["create", "--state", state, "--config", root / "enclave.yaml", "--output", out]
    neither = _tool(*base)
    assert neither.returncode == 2
    assert "one of the arguments --recipients-file --unencrypted is required" in neither.stderr
    assert not out.exists()
    plain = _tool(*base, "--unencrypted")
    assert plain.returncode == 0, plain.stderr
    assert "WARNING: writing an UNENCRYPTED backup" in plain.stderr
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip: readable by anyone holding it
    empty = tmp_path / "none.txt"
    empty.write_text("# nobody\n")
    refused = _tool(*base, "--recipients-file", empty)
    assert refused.returncode != 0
    assert f"{empty} holds no age recipient" in refused.stderr


def test_progress_on_a_terminal_and_none_on_a_pipe(world, tmp_path):
    """A restore by hand shows its steps (what it waits on) on a terminal; under Ansible (a
    pipe) stderr stays empty and stdout is the JSON result alone."""
    from tests.unit.test_progress import LINE, _run_on_a_terminal

    root, _state, archive = world
    argv = [sys.executable, str(TOOL), "verify", str(archive), "--identity",
            str(root / "operator.key")]  # fmt: skip
    out, err = _run_on_a_terminal(argv, tmp_path / "unused", "never")
    for text in (f"decrypting {archive.name}: waiting on age",
                 "checking every member against the manifest", "done"):  # fmt: skip
        assert re.search(LINE.format(label="havre_archive.py", text=re.escape(text)), err), err
    assert json.loads(out)["ok"] is True
    env = {k: v for k, v in os.environ.items() if k != "HAVRE_PROGRESS"}
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert piped.returncode == 0 and piped.stderr == ""
    assert json.loads(piped.stdout)["ok"] is True
