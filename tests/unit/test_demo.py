"""The demo enclave and its passwords: written once, kept on a second run."""

from __future__ import annotations

import stat

from spawner.demo import init_demo
from spawner.demo_auth import hash_password, read_password_file, verify_password
from spawner.stack import prepare_state


def test_password_hashes_verify_and_reject():
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("x", "not-a-hash")


def test_demo_init_is_idempotent_and_keeps_secrets_private(tmp_path):
    config, users = init_demo(tmp_path, "havre/notebook:0.1.0")
    assert set(config.projects) == {"cardio", "diabetes"}
    assert {u.name for u in users} == {"alice", "bob", "carol", "olivia", "oscar"}
    assert config.projects_of("carol") == [config.project("cardio"), config.project("diabetes")]
    hashes = read_password_file(tmp_path / "secrets" / "demo-passwords.json")
    for user in users:
        assert verify_password(user.password, hashes[user.name])
    data = tmp_path / "projects" / "cardio" / "data" / "hospital_stays.csv"
    before = data.read_bytes()

    again, users_again = init_demo(tmp_path, "havre/notebook:0.1.0")
    assert users_again == users  # same passwords
    assert data.read_bytes() == before
    assert again == config

    for name in ("demo-passwords.json", "demo-passwords.txt"):
        mode = stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode)
        assert mode == 0o600, name


def test_prepare_state_makes_secrets_once(tmp_path):
    config, _users = init_demo(tmp_path, "havre/notebook:0.1.0")
    prepare_state(config)
    token = (tmp_path / "secrets" / "proxy-auth-token").read_text()
    prepare_state(config)
    assert (tmp_path / "secrets" / "proxy-auth-token").read_text() == token
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    outputs = config.outputs_dir("cardio")
    assert outputs.stat().st_uid == 1000 and outputs.is_dir()
