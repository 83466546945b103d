"""The hub's configuration as the enclave config dictates it (no hub process needed)."""

from __future__ import annotations

import os
import stat

import pytest
from traitlets.config import Config

from havre.enclave.config import load_enclave_config
from havre.host.demo import init_demo
from havre.host.layout import prepare_state
from spawner.hub_config import ADMIN_SCOPES, USER_SCOPES, configure_hub

KEYCLOAK = """
identity:
  provider: oidc
  checker_groups: [/havre/checkers]
  admin_groups: [/havre/admins]
  oidc:
    authorize_url: https://sso.example.org/realms/h/protocol/openid-connect/auth
    token_url: https://sso.example.org/realms/h/protocol/openid-connect/token
    userdata_url: https://sso.example.org/realms/h/protocol/openid-connect/userinfo
    logout_url: https://sso.example.org/realms/h/protocol/openid-connect/logout
    client_id: havre
    client_secret_file: {secret}
"""


@pytest.fixture
def enclave_files(tmp_path):
    config, _users = init_demo(tmp_path / "state", "havre/notebook:0.1.0")
    prepare_state(config)
    return config


def configure(config_path, **env) -> Config:
    c = Config()
    environ = {
        "HAVRE_CONFIG": str(config_path),
        "HAVRE_PROXY_BIND_IP": "10.99.0.2",
        "HAVRE_PUBLIC_URL": "https://havre.example.org",
        **env,
    }
    configure_hub(c, environ)
    return c


def test_embedded_provider_wiring(enclave_files):
    c = configure(
        enclave_files.source,
        HAVRE_IDP_PUBLIC_URL="https://login.example.org",
        HAVRE_IDP_INTERNAL_URL="http://havre-idp:8001",
    )
    auth = c.GenericOAuthenticator
    assert auth.authorize_url == "https://login.example.org/authorize"  # the browser's
    assert auth.token_url == "http://havre-idp:8001/token"  # the hub's, inside Docker
    assert auth.oauth_callback_url == "https://havre.example.org/hub/oauth_callback"
    assert auth.enable_pkce and auth.manage_groups and auth.enable_auth_state
    assert auth.admin_groups == set() and auth.admin_users == set()
    groups = auth.auth_state_groups_key
    assert groups({"oauth_user": {"groups": ["/project-cardio", "x"]}}) == ["project-cardio"]
    assert groups({"oauth_user": {}}) == []  # no groups claim: nothing
    assert groups({"oauth_user": {"groups": "project-cardio"}}) == []  # malformed: nothing
    assert c.JupyterHub.cookie_options == {"secure": True, "samesite": "Lax"}  # HTTPS
    assert c.JupyterHub.bind_url == "http://10.99.0.2:8000/"  # proxy: front address only
    keys = c.CryptKeeper["keys"]  # ("keys" is also a dict method of Config)
    assert len(keys) == 1 and len(keys[0]) == 32


def test_site_provider_wiring(tmp_path):
    secret = tmp_path / "oidc-secret"
    secret.write_text("s3cret-from-keycloak\n")
    os.chmod(secret, 0o600)
    path = tmp_path / "enclave.yaml"
    path.write_text(
        f"enclave: {{name: site, state_dir: {tmp_path / 'state'}}}\n"
        "projects:\n  cardio: {title: Cardio}\n  diabetes: {title: Diabetes}\n"
        + KEYCLOAK.format(secret=secret)
    )
    prepare_state(load_enclave_config(path))
    c = configure(path)
    auth = c.GenericOAuthenticator
    assert auth.authorize_url.startswith("https://sso.example.org/")
    assert auth.client_id == "havre" and auth.client_secret == "s3cret-from-keycloak"
    assert auth.logout_redirect_url.endswith("/openid-connect/logout")
    groups = auth.auth_state_groups_key
    state = {"oauth_user": {"groups": ["/havre/checkers", "/project-diabetes", "/other"]}}
    assert groups(state) == ["project-diabetes", "output-checkers"]


def test_roles_never_give_tokens_or_server_access_by_default(enclave_files):
    c = configure(enclave_files.source)
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == USER_SCOPES
    assert not any(s.startswith("tokens") for s in USER_SCOPES)
    assert not any("shares" in s for s in USER_SCOPES)
    assert "admin" not in roles  # JupyterHub's own admin role (with access:servers) unused
    assert not any(
        s.startswith(("access:servers", "tokens", "admin:auth_state")) for s in ADMIN_SCOPES
    )
    assert roles["server-access"]["groups"] == ["server-access"]
    # membership (projects, checkers, break-glass) comes only from the identity provider
    from jupyterhub.scopes import _expand_scope

    granted = set().union(*(_expand_scope(s) for s in ADMIN_SCOPES))
    assert not granted & {"groups", "admin:groups", "admin:users", "delete:groups"}
    assert {"read:groups", "list:groups"} <= granted
    assert set(roles["egress-service"]["scopes"]) <= {
        "read:users:name",
        "read:users:groups",
        "read:groups",
    }
    culler = [s for s in c.JupyterHub.services if s["name"] == "idle-culler"][0]
    assert "--timeout=3600" in culler["command"] and "--max-age=43200" in culler["command"]


def test_secrets_must_be_private(enclave_files):
    cookie = enclave_files.state_dir / "secrets" / "proxy-auth-token"
    os.chmod(cookie, 0o644)
    with pytest.raises(PermissionError, match="readable by its owner only"):
        configure(enclave_files.source)
    os.chmod(cookie, 0o600)
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600


def test_invalid_config_stops_the_hub(tmp_path, capsys):
    bad = tmp_path / "enclave.yaml"
    bad.write_text("projects:\n  cardio:\n    title: x\n    groups: cardio\n")
    with pytest.raises(SystemExit) as info:
        configure(bad)
    assert info.value.code == 78
    assert "projects.cardio.groups: must be a list" in capsys.readouterr().err
