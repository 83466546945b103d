"""Sign-in through the real OpenID Connect provider, over HTTP, and what each identity may do.

Every case is a full login as a browser does it: the hub sends the browser to the provider's
login page, the test fills in the form, the provider sends it back to the hub with a code, and
the hub exchanges the code (with its PKCE verifier) for tokens and the user's groups.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import pytest
import requests

from tests.integration.hub_client import HubUser, login_form
from tests.log_capture import container_events

pytestmark = pytest.mark.docker

NO_ACCESS = "in no Havre project group"


class Provider:
    """The embedded provider's admin API, used here as a sysadmin would with curl."""

    def __init__(self, enclave) -> None:
        self.url = enclave.options.idp_public_url
        token_file = enclave.config.state_dir / "secrets" / "idp-admin-token"
        self.headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}

    def put_user(self, name: str, groups: list[str], password: str | None = None) -> str:
        password = password or secrets.token_urlsafe(12)
        body = {
            "groups": groups,
            "email": f"{name}@test.invalid",
            "name": name,
            "password": password,
        }
        r = requests.put(
            f"{self.url}/admin/users/{name}", json=body, headers=self.headers, timeout=30
        )
        assert r.status_code in (200, 201), r.text
        return password

    def set_groups(self, name: str, groups: list[str]) -> None:
        r = requests.put(
            f"{self.url}/admin/users/{name}",
            json={"groups": groups},
            headers=self.headers,
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def revoke_tokens(self, name: str) -> None:
        r = requests.post(
            f"{self.url}/admin/users/{name}/revoke-tokens", headers=self.headers, timeout=30
        )
        assert r.status_code in (200, 204), r.text


@pytest.fixture(scope="module")
def provider(enclave) -> Provider:
    return Provider(enclave)


def new_user(enclave, provider: Provider, name: str, groups: list[str]) -> HubUser:
    return HubUser(enclave.url, name, provider.put_user(name, groups))


def hub_groups(user: HubUser) -> list[str]:
    r = user.api("GET", f"users/{user.name}")
    assert r.status_code == 200, r.text
    return sorted(r.json()["groups"])


def whoami(user: HubUser) -> dict:
    r = user.session.get(user.url("services/egress/api/whoami"), timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()


@pytest.mark.parametrize(
    ("name", "provider_groups", "expected_groups", "projects", "checker"),
    [
        ("idt-one", ["project-cardio"], ["project-cardio"], ["cardio"], False),
        (
            "idt-two",
            ["project-cardio", "project-diabetes"],
            ["project-cardio", "project-diabetes"],
            ["cardio", "diabetes"],
            False,
        ),
        ("idt-keycloak", ["/project-diabetes"], ["project-diabetes"], ["diabetes"], False),
        ("idt-checker", ["output-checkers"], ["output-checkers"], [], True),
        (
            "idt-mixed",
            ["project-cardio", "/unrelated/group", "output-checkers"],
            ["output-checkers", "project-cardio"],
            ["cardio"],
            True,
        ),
    ],
)
def test_groups_at_the_provider_become_projects_and_roles(
    enclave, provider, name, provider_groups, expected_groups, projects, checker
):
    user = new_user(enclave, provider, name, provider_groups).login()
    assert hub_groups(user) == expected_groups  # unmapped provider groups never reach the hub
    seen = whoami(user)  # the egress service sees the same rights through the hub
    assert seen == {"name": name, "projects": projects, "output_checker": checker}


@pytest.mark.parametrize("provider_groups", [[], ["staff", "/hospital/everyone"]])
def test_no_matching_group_means_no_access_with_a_page_that_says_why(
    enclave, provider, provider_groups
):
    user = new_user(enclave, provider, f"idt-none-{len(provider_groups)}", provider_groups)
    since = time.time() - 1
    response = user.sign_in()
    assert response.status_code == 403
    assert NO_ACCESS in response.text
    # the hub's real log: the refusal as one JSON line at WARNING, naming the user
    lines = container_events(enclave.hub_container(), "login.refused", since)
    mine = [e for e in lines if e["user"] == user.name]
    assert mine and {e["service"] for e in mine} == {"hub"}, lines
    assert not user.session.cookies.get("jupyterhub-session-id")
    assert user.api("GET", f"users/{user.name}").status_code in (403, 404)


def test_wrong_password_gets_no_code(enclave, provider):
    user = new_user(enclave, provider, "idt-wrongpw", ["project-cardio"])
    response = user.sign_in(password="not-the-password")
    assert response.status_code in (200, 401)
    assert login_form(response.text) is not None  # the provider's form again
    assert "oauth_callback" not in response.url
    assert not user.session.cookies.get("jupyterhub-session-id")


def _callback_location(user: HubUser) -> str:
    """Sign in at the provider but stop before the browser goes back to the hub."""
    page = user.session.get(user.url("hub/oauth_login?next=/hub/home"), timeout=30)
    action, fields = login_form(page.text)
    fields.update({"username": user.name, "password": user.password})
    r = user.session.post(urljoin(page.url, action), data=fields, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text[:300]
    return r.headers["Location"]


def _with_query(url: str, **changes: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunparse(parts._replace(query=urlencode(query)))


def test_tampered_state_is_rejected(enclave, provider):
    user = new_user(enclave, provider, "idt-state", ["project-cardio"])
    location = _callback_location(user)
    r = user.session.get(_with_query(location, state="forged" + "A" * 40), timeout=30)
    assert r.status_code in (400, 403)
    assert not user.session.cookies.get("jupyterhub-session-id")


def test_callback_without_the_pkce_verifier_is_rejected(enclave, provider):
    """The verifier lives in the hub's state cookie: without it the code can't be redeemed."""
    user = new_user(enclave, provider, "idt-pkce", ["project-cardio"])
    location = _callback_location(user)
    names = [c.name for c in user.session.cookies]
    assert any(name.startswith("oauthenticator-state") for name in names), names
    for cookie in list(user.session.cookies):
        if cookie.name.startswith("oauthenticator-state"):
            user.session.cookies.clear(cookie.domain, cookie.path, cookie.name)
    r = user.session.get(location, timeout=30)
    assert r.status_code in (400, 403)
    assert not user.session.cookies.get("jupyterhub-session-id")

    # and the provider itself refuses the code without the verifier
    code = parse_qs(urlparse(location).query)["code"][0]
    secret = (enclave.config.state_dir / "secrets" / "idp-client-jupyterhub").read_text().strip()
    r = requests.post(
        f"{provider.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{enclave.options.public_url}/hub/oauth_callback",
        },
        auth=("jupyterhub", secret),
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_users_cannot_create_api_tokens(enclave):
    alice = enclave.user("alice")
    r = alice.api("POST", "users/alice/tokens", json={"note": "script", "expires_in": 3600})
    assert r.status_code == 403, r.text


def test_admin_manages_users_but_cannot_open_a_researchers_server(enclave, alice_cardio):
    adam = enclave.user("adam")
    assert adam.api("GET", "users").status_code == 200  # an administrator
    # a page of the server sends the browser through the hub's OAuth; the hub refuses
    r = adam.session.get(adam.url("user/alice/cardio/lab"), timeout=30)
    assert r.status_code == 403, (r.status_code, r.url)
    assert "/hub/api/oauth2/authorize" in r.url
    r = adam.session.get(adam.url("user/alice/cardio/api/status"), timeout=30)
    assert r.status_code == 403


@pytest.mark.parametrize(
    "group, member",
    [("project-cardio", "alice"), ("output-checkers", "olivia"), ("server-access", None)],
)
def test_admin_cannot_grant_himself_a_project_the_checker_role_or_break_glass(
    enclave, group, member
):
    """Membership comes only from the identity provider: the hub's group API refuses writes."""
    if member:
        enclave.user(member)  # a member's sign-in makes the hub create the group
    adam = enclave.user("adam")
    # control: the same session and XSRF token read the group (the request itself is sound)
    before = adam.api("GET", f"groups/{group}")
    assert before.status_code == 200, before.text
    r = adam.api("POST", f"groups/{group}/users", json={"users": ["adam"]})
    assert r.status_code == 403, r.text
    assert "groups" in r.json()["message"]  # JupyterHub names the missing scope
    r = adam.api("DELETE", f"groups/{group}/users", json={"users": before.json()["users"]})
    assert r.status_code == 403, r.text
    r = adam.api("POST", "groups/adam-made-this", json={"users": ["adam"]})
    assert r.status_code == 403, r.text
    r = adam.api("PATCH", "users/adam", json={"admin": True, "groups": [group]})
    assert r.status_code == 403, r.text
    after = adam.api("GET", f"groups/{group}")
    assert after.json()["users"] == before.json()["users"]
    assert "adam" not in after.json()["users"]


# Break glass (activation with a reason, time limit, audit, checkers told):
# tests/integration/test_break_glass.py


def test_losing_a_group_refuses_new_servers_and_stops_running_ones(enclave, provider):
    gina = new_user(enclave, provider, "idt-leaver", ["project-cardio", "project-diabetes"])
    gina.login()
    for project in ("cardio", "diabetes"):
        assert gina.start_server(project).status_code in (201, 202)
        gina.wait_ready(project)

    provider.set_groups(gina.name, ["project-cardio"])  # removed from diabetes
    # the running diabetes server is stopped within the membership check interval + poll
    started = time.monotonic()
    gone = enclave.wait_container_gone(gina.name, "diabetes", timeout=60)
    hub_log = enclave.hub_container().logs(tail=400).decode(errors="replace")
    assert gone, "\n".join(hub_log.splitlines()[-60:])
    stopped_after = time.monotonic() - started
    # a new diabetes server is refused (groups are refreshed before every spawn)
    r = gina.start_server("diabetes")
    assert r.status_code == 403, r.text
    assert enclave.notebook_container(gina.name, "cardio") is not None  # cardio unaffected
    gina.stop_server("cardio")
    print(f"running server stopped {stopped_after:.1f} s after the group change")


def test_revoked_sign_in_stops_servers_and_refuses_spawns(enclave, provider):
    rita = new_user(enclave, provider, "idt-revoked", ["project-cardio"]).login()
    assert rita.start_server("cardio").status_code in (201, 202)
    rita.wait_ready("cardio")
    provider.revoke_tokens(rita.name)
    assert enclave.wait_container_gone(rita.name, "cardio", timeout=60)
    r = rita.start_server("cardio")
    assert r.status_code == 403 and "login again" in r.text, r.text
    assert enclave.notebook_container(rita.name, "cardio") is None


def _replay(jar: requests.cookies.RequestsCookieJar, url: str) -> requests.Response:
    """A fresh client with copied cookies (what someone who captured them would send)."""
    thief = requests.Session()
    thief.cookies.update(jar)
    return thief.get(url, timeout=30, allow_redirects=False)


def test_logout_ends_every_session_and_copied_cookies_are_refused_at_once(enclave, provider):
    lena = new_user(enclave, provider, "idt-logout", ["project-cardio"]).login()
    assert lena.start_server("cardio").status_code in (201, 202)
    lena.wait_ready("cardio")
    lena.open_server("cardio")
    assert whoami(lena)["projects"] == ["cardio"]  # the egress service's cookie too
    server = lena.server_url("cardio", "api/status")
    egress = lena.url("services/egress/api/whoami")
    hub_api = lena.url(f"hub/api/users/{lena.name}")
    copied = requests.cookies.RequestsCookieJar()
    copied.update(lena.session.cookies)
    # control: with the copied cookies, a second client is let in everywhere before the logout
    assert _replay(copied, server).status_code == 200
    assert _replay(copied, egress).status_code == 200
    assert _replay(copied, hub_api).status_code == 200

    r = lena.session.get(lena.url("hub/logout"), timeout=30)
    hub_log = enclave.hub_container().logs(tail=60).decode(errors="replace")
    assert r.status_code == 200, (r.status_code, r.url, hub_log)
    started = time.monotonic()
    assert _replay(copied, hub_api).status_code == 403, "the hub still knows the copied cookie"
    # servers and the egress service keep the hub's answer for one second (JupyterHub's
    # default is five minutes): wait on the refusal, bounded well under a minute
    refused = {server: (302, 403), egress: (302, 401, 403)}
    while refused and time.monotonic() - started < 15:
        refused = {u: ok for u, ok in refused.items() if _replay(copied, u).status_code not in ok}
        time.sleep(0.2)
    refused_after = time.monotonic() - started
    assert not refused, f"still let in {refused_after:.1f} s after the logout: {list(refused)}"
    # the sign-in at the provider ended too: the hub's stored refresh token is gone and void
    r = lena.session.get(lena.url("hub/api/user"), timeout=30)
    assert r.status_code == 403
    assert enclave.notebook_container(lena.name, "cardio") is not None  # work keeps running
    print(f"copied cookies refused {refused_after:.2f} s after the logout")
    lena = HubUser(enclave.url, lena.name, lena.password).login()  # signing in again works
    lena.stop_server("cardio")
