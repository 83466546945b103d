"""The demo enclave and its users: written once, kept on a second run."""

from __future__ import annotations

import stat

from havre.host.demo import idp_users_file, init_demo
from havre.host.layout import prepare_state
from havre.idp.passwords import hash_password, verify_password
from havre.idp.users import read_users_file


def test_password_hashes_verify_and_reject():
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("x", "not-a-hash")


def test_demo_init_is_idempotent_and_keeps_secrets_private(tmp_path):
    config, users = init_demo(tmp_path, "havre/notebook:0.1.0")
    assert set(config.projects) == {"cardio", "diabetes", "renal"}
    assert [p.slug for p in config.projects.values() if p.desktop] == ["renal"]
    # renal allows text pasted in (audited), to show the paste box; the others have no desktop
    assert {p.slug: p.desktop_paste for p in config.projects.values()} == {
        "cardio": "none",
        "diabetes": "none",
        "renal": "inbound-text",
    }
    names = {u.name for u in users}
    assert names == {"alice", "bob", "carol", "chloe", "dora", "olivia", "oscar", "adam"}
    idp_users = read_users_file(idp_users_file(config))
    for user in users:
        assert verify_password(user.password, idp_users[user.name].password_hash)
    carol_groups = config.hub_groups_for(idp_users["carol"].groups)
    assert [p.slug for p in config.projects_of("carol", carol_groups)] == ["cardio", "diabetes"]
    bob_groups = config.hub_groups_for(idp_users["bob"].groups)  # Keycloak-style path
    assert [p.slug for p in config.projects_of("bob", bob_groups)] == ["diabetes"]
    assert config.is_checker("olivia", config.hub_groups_for(idp_users["olivia"].groups))
    data = tmp_path / "projects" / "cardio" / "data" / "hospital_stays.csv"
    before = data.read_bytes()

    again, users_again = init_demo(tmp_path, "havre/notebook:0.1.0")
    assert users_again == users  # same passwords
    assert data.read_bytes() == before
    assert again == config

    mode = stat.S_IMODE((tmp_path / "secrets" / "demo-passwords.txt").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(idp_users_file(config).stat().st_mode) == 0o600


def test_prepare_state_makes_secrets_once(tmp_path):
    config, _users = init_demo(tmp_path, "havre/notebook:0.1.0")
    prepare_state(config)
    token = (tmp_path / "secrets" / "proxy-auth-token").read_text()
    prepare_state(config)
    assert (tmp_path / "secrets" / "proxy-auth-token").read_text() == token
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    outputs = config.outputs_dir("cardio")
    # owned by the egress service's uid, with the project's group, sticky and setgid
    # (havre/enclave/identities.py project_plan)
    assert outputs.is_dir() and outputs.stat().st_uid == 1001
    assert stat.S_IMODE(outputs.stat().st_mode) == 0o3570
    assert outputs.stat().st_gid >= config.uid_base
