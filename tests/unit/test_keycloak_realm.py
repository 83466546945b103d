"""The Keycloak realm Havre ships (``ansible/files/keycloak/havre-realm.json``) against what
Havre's OpenID Connect wiring expects of it.

Keycloak itself can't run here (it needs a JVM and its distribution, which this machine can't
download), so the test plays the part of Keycloak that matters: which claims its mappers put
in the userinfo answer, for which requested scopes. Every expectation comes from Havre itself:
the example inventory is rendered through the enclave role's template (as Ansible writes the
config for an external provider), parsed by Havre's parser and handed to the hub's wiring
(:func:`spawner.hub_config.configure_hub`); the client id, callback URL, scopes, PKCE, claims
and the group mapping are read from what that wiring configured. Each way of breaking the
realm is checked to be caught (the shipped realm is the positive control).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from traitlets.config import Config

from havre.enclave.config import (
    BREAK_GLASS_HUB_GROUP,
    SERVER_ACCESS_HUB_GROUP,
    EnclaveConfig,
    load_enclave_config,
)
from havre.host.layout import prepare_state
from spawner.hub_config import configure_hub

REPO = Path(__file__).resolve().parents[2]
REALM_FILE = REPO / "ansible" / "files" / "keycloak" / "havre-realm.json"
EXAMPLE = REPO / "ansible" / "inventories" / "example" / "group_vars" / "havre"
ROLE_TEMPLATE = REPO / "ansible" / "roles" / "havre_enclave" / "templates" / "enclave.yaml.j2"
templating = pytest.importorskip("ansible.template", reason="ansible-core is a dev dependency")


def example_enclave(tmp_path: Path) -> tuple[EnclaveConfig, str]:
    """The example inventory's enclave config as the enclave role writes it, and its public
    URL; the state and secrets folder moved under ``tmp_path``."""
    from ansible.parsing.dataloader import DataLoader

    variables = yaml.safe_load((REPO / "ansible" / "group_vars" / "all.yml").read_text())
    for name in ("main.yml", "projects.yml"):
        variables.update(yaml.safe_load((EXAMPLE / name).read_text()))
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    variables.update(
        {
            "ansible_managed": "Ansible managed",
            "inventory_dir": str(tmp_path),
            "havre_state_dir": str(tmp_path / "state"),
            "havre_config_dir": str(config_dir),
        }
    )
    templar = templating.Templar(loader=DataLoader(), variables=variables)
    text = templar.template(ROLE_TEMPLATE.read_text())
    secret = config_dir / "oidc-client-secret"  # the role writes the vault's secret there
    secret.write_text("secret-from-keycloak\n")
    os.chmod(secret, 0o600)
    path = config_dir / "enclave.yaml"
    path.write_text(text)
    enclave = load_enclave_config(path)
    prepare_state(enclave)
    return enclave, f"https://{variables['havre_public_host']}"


@pytest.fixture(scope="module")
def wiring(tmp_path_factory: pytest.TempPathFactory) -> tuple[EnclaveConfig, Any]:
    """The example enclave and the authenticator settings the hub's wiring gives it."""
    tmp_path = tmp_path_factory.mktemp("keycloak")
    enclave, public_url = example_enclave(tmp_path)
    c = Config()
    configure_hub(
        c,
        {
            "HAVRE_CONFIG": str(enclave.source),
            "HAVRE_PROXY_BIND_IP": "10.99.0.2",
            "HAVRE_PUBLIC_URL": public_url,
        },
    )
    assert enclave.identity.provider == "oidc", "the example inventory uses the site's provider"
    return enclave, c.GenericOAuthenticator


def load_realm() -> dict[str, Any]:
    return json.loads(REALM_FILE.read_text())


# -- what Keycloak would do with the realm: the userinfo claims of a user in some groups


def group_paths(groups: list[dict[str, Any]], parent: str = "") -> list[tuple[str, str]]:
    """Every group of the realm as ``(full path, name)``, subgroups included."""
    found = []
    for group in groups:
        path = f"{parent}/{group['name']}"
        found.append((path, group["name"]))
        found += group_paths(group.get("subGroups") or [], path)
    return found


def parent_paths(groups: list[dict[str, Any]]) -> set[str]:
    """The full paths of the realm's groups that hold other groups (folders, not roles)."""
    return {path.rsplit("/", 1)[0] for path, _ in group_paths(groups) if path.count("/") > 1}


def client_mappers(realm: dict[str, Any], client: dict[str, Any], scopes: list[str]):
    """The protocol mappers a token requested with ``scopes`` runs: the client's own, those
    of its default client scopes, and those of the optional ones requested."""
    by_name = {s["name"]: s for s in realm.get("clientScopes") or []}
    names = list(client.get("defaultClientScopes") or [])
    names += [s for s in scopes if s in (client.get("optionalClientScopes") or [])]
    mappers = list(client.get("protocolMappers") or [])
    for name in names:
        mappers += by_name.get(name, {}).get("protocolMappers") or []
    return mappers


def userinfo(
    realm: dict[str, Any], client: dict[str, Any], scopes: list[str], username: str, groups
) -> dict[str, Any]:
    """The userinfo answer for ``username`` in the groups ``[(path, name)]``."""
    claims: dict[str, Any] = {"sub": "f1e2d3c4"}
    for mapper in client_mappers(realm, client, scopes):
        config = mapper.get("config") or {}
        if config.get("userinfo.token.claim") != "true":
            continue
        kind = mapper.get("protocolMapper")
        if kind == "oidc-group-membership-mapper":
            full = config.get("full.path") == "true"
            claims[config["claim.name"]] = [path if full else name for path, name in groups]
        elif kind == "oidc-usermodel-property-mapper" and config.get("user.attribute") == (
            "username"
        ):
            claims[config["claim.name"]] = username
    return claims


def realm_problems(realm: dict[str, Any], enclave: EnclaveConfig, auth: Any) -> list[str]:
    """What in ``realm`` doesn't fit the hub's wiring ``auth``, one sentence each."""
    problems: list[str] = []
    clients = [c for c in realm.get("clients") or [] if c.get("clientId") == auth.client_id]
    if not clients:
        return [f"the realm has no client {auth.client_id!r}, the hub's client id"]
    client = clients[0]
    attributes = client.get("attributes") or {}
    if auth.enable_pkce and attributes.get("pkce.code.challenge.method") != "S256":
        problems.append("the client does not require PKCE with S256")
    if client.get("publicClient") or client.get("clientAuthenticatorType") != "client-secret":
        problems.append("the client is not confidential with a client secret (the hub sends one)")
    if not client.get("standardFlowEnabled", True):
        problems.append("the client has no authorization code flow")
    if client.get("implicitFlowEnabled") or client.get("directAccessGrantsEnabled"):
        problems.append("the client allows the implicit or password grant")
    if auth.oauth_callback_url not in (client.get("redirectUris") or []):
        problems.append(f"the client does not allow the hub's callback {auth.oauth_callback_url}")
    query = parse_qs(urlsplit(auth.logout_redirect_url or "").query)
    after_logout = query.get("post_logout_redirect_uri", [""])[0]
    allowed_after = (attributes.get("post.logout.redirect.uris") or "").split("##")
    if after_logout and after_logout not in allowed_after:
        problems.append(f"the client does not allow {after_logout} after logout")
    if query.get("client_id", [auth.client_id])[0] != auth.client_id:
        problems.append("the logout URL names another client")
    defined = {s["name"] for s in realm.get("clientScopes") or []}
    assigned = set(client.get("defaultClientScopes") or [])
    assigned |= set(client.get("optionalClientScopes") or [])
    for scope in auth.scope:
        if scope != "openid" and not (scope in defined and scope in assigned):
            problems.append(f"the hub asks for scope {scope!r}, which the client doesn't have")
    if not realm.get("revokeRefreshToken") or realm.get("refreshTokenMaxReuse", 0) != 0:
        problems.append("refresh tokens are not rotated (revokeRefreshToken, no reuse)")
    session_max = realm.get("ssoSessionMaxLifespan", 36000)
    if session_max < enclave.culling.max_age_seconds:
        problems.append(
            f"a sign-in ends after {session_max} s, before the culler's maximum server age "
            f"({enclave.culling.max_age_seconds} s): running servers would be stopped"
        )
    if realm.get("ssoSessionIdleTimeout", 1800) <= enclave.identity.membership_check_seconds:
        problems.append("the session idles out between two of the hub's membership checks")

    # sign-ins: one user in each group; what the hub's own mapping makes of the userinfo
    reachable: set[str] = set()
    for path, name in group_paths(realm.get("groups") or []):
        claims = userinfo(realm, client, list(auth.scope), "alice", [(path, name)])
        if claims.get(auth.username_claim) != "alice":
            problems.append(f"the userinfo answer has no {auth.username_claim!r} claim")
            break
        hub_groups = auth.auth_state_groups_key({"oauth_user": claims})
        if not hub_groups and path not in parent_paths(realm.get("groups") or []):
            problems.append(f"the realm's group {path} gives no Havre project or role")
        reachable |= set(hub_groups)
    wanted = set(enclave.all_hub_groups()) - {SERVER_ACCESS_HUB_GROUP}  # never from claims
    if not enclave.identity.server_access_groups:
        wanted.discard(BREAK_GLASS_HUB_GROUP)
    for hub_group in sorted(wanted - reachable):
        problems.append(f"no group of the realm gives the hub group {hub_group}")
    return problems


def test_the_shipped_realm_fits_the_hubs_wiring(wiring):
    enclave, auth = wiring
    assert realm_problems(load_realm(), enclave, auth) == []
    # and the sign-in the check simulates gives what the docs promise, read from the config
    realm = load_realm()
    client = realm["clients"][0]
    paths = dict(group_paths(realm["groups"]))
    claims = userinfo(realm, client, list(auth.scope), "chloe", list(paths.items()))
    assert claims["groups"] == list(paths)  # full paths, as Keycloak sends them
    hub_groups = auth.auth_state_groups_key({"oauth_user": claims})
    assert sorted(enclave.projects_of("chloe", hub_groups), key=lambda p: p.slug) == sorted(
        enclave.projects.values(), key=lambda p: p.slug
    )
    assert enclave.is_checker("chloe", hub_groups)


def _without_pkce(realm):
    del realm["clients"][0]["attributes"]["pkce.code.challenge.method"]


def _plain_pkce(realm):
    realm["clients"][0]["attributes"]["pkce.code.challenge.method"] = "plain"


def _other_callback(realm):
    realm["clients"][0]["redirectUris"] = ["https://tre1.example.org/oauth_callback"]


def _bare_group_names(realm):
    groups_scope(realm)["protocolMappers"][0]["config"]["full.path"] = "false"


def _groups_not_in_userinfo(realm):
    groups_scope(realm)["protocolMappers"][0]["config"]["userinfo.token.claim"] = "false"


def _groups_scope_not_assigned(realm):
    realm["clients"][0]["defaultClientScopes"].remove("groups")


def _public_client(realm):
    realm["clients"][0]["publicClient"] = True


def _password_grant(realm):
    realm["clients"][0]["directAccessGrantsEnabled"] = True


def _renamed_checkers(realm):
    realm["groups"][2]["subGroups"][0]["name"] = "checkers"


def _stray_group(realm):
    realm["groups"].append({"name": "project-typo", "path": "/project-typo", "subGroups": []})


def _short_sessions(realm):
    realm["ssoSessionMaxLifespan"] = 36000  # Keycloak's default: 10 hours


def _no_rotation(realm):
    realm["revokeRefreshToken"] = False


def _other_client_id(realm):
    realm["clients"][0]["clientId"] = "jupyterhub"


def _no_logout_return(realm):
    del realm["clients"][0]["attributes"]["post.logout.redirect.uris"]


def groups_scope(realm):
    return next(s for s in realm["clientScopes"] if s["name"] == "groups")


BREAKS = {
    _without_pkce: "does not require PKCE with S256",
    _plain_pkce: "does not require PKCE with S256",
    _other_callback: "does not allow the hub's callback https://tre1.example.org/hub/oauth_callback",
    _bare_group_names: "no group of the realm gives the hub group output-checkers",
    _groups_not_in_userinfo: "no group of the realm gives the hub group project-cardio",
    _groups_scope_not_assigned: "the hub asks for scope 'groups', which the client doesn't have",
    _public_client: "is not confidential",
    _password_grant: "allows the implicit or password grant",
    _renamed_checkers: "no group of the realm gives the hub group output-checkers",
    _stray_group: "the realm's group /project-typo gives no Havre project or role",
    _short_sessions: "before the culler's maximum server age (43200 s)",
    _no_rotation: "refresh tokens are not rotated",
    _other_client_id: "the realm has no client 'havre'",
    _no_logout_return: "does not allow https://tre1.example.org/hub/login after logout",
}


@pytest.mark.parametrize("breaking", list(BREAKS), ids=lambda f: f.__name__.strip("_"))
def test_each_way_of_breaking_the_realm_is_caught(wiring, breaking):
    enclave, auth = wiring
    realm = copy.deepcopy(load_realm())
    breaking(realm)
    problems = realm_problems(realm, enclave, auth)
    assert any(BREAKS[breaking] in p for p in problems), problems
