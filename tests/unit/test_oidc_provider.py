"""The embedded OpenID Connect provider, driven over real HTTP on a loopback port.

Each test starts its own provider (a tornado server in a background thread) and talks to it
with ``requests``, as a browser and a relying party would. Nothing is mocked. The last tests
run JupyterHub's real ``GenericOAuthenticator`` against it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import shutil
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tornado.netutil import bind_sockets

from havre.idp import authorize as oidc_provider
from havre.idp import constants as idp_constants
from havre.idp.config import ConfigError, ensure_secret_file, load_config
from havre.idp.passwords import verify_password
from havre.idp.server import main, make_app, make_server
from havre.idp.tokens import SigningKey
from havre.idp.users import read_users_file, seed_users, write_users_file
from tests.certificates import self_signed
from tests.scrypt_hashes import legacy_scrypt_hash

CALLBACK = "http://127.0.0.1:8000/hub/oauth_callback"
LOGOUT_DONE = "http://127.0.0.1:8000/hub/logged-out"
USERS = {
    "alice": {
        "password": "alice-correct-horse",
        "groups": ["cardio", "researchers"],
        "email": "alice@example.org",
        "name": "Alice Archer",
    },
    "olivia": {
        "password": "olivia-battery-staple",
        "groups": ["output-checkers"],
        "email": "olivia@example.org",
        "name": "Olivia Oakes",
    },
    "mallory": {"password": "mallory-no-groups", "groups": []},
}


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A users file and a signing key made once (scrypt and RSA are slow), copied per test."""
    folder = tmp_path_factory.mktemp("seed")
    seed_users(folder / "users.json", USERS)
    (folder / "state").mkdir(mode=0o700)
    SigningKey.load_or_create(folder / "state")
    return folder


@dataclass
class RunningProvider:
    url: str
    client_secret: str
    admin_token: str
    users_file: Path
    config_file: Path
    loop: asyncio.AbstractEventLoop
    stop_event: asyncio.Event
    thread: threading.Thread

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)

    # -- as a relying party

    def authorize_params(self, **overrides) -> dict:
        verifier, challenge = pkce()
        params = {
            "client_id": "jupyterhub",
            "redirect_uri": CALLBACK,
            "response_type": "code",
            "scope": "openid profile email groups",
            "state": "st-" + secrets.token_urlsafe(8),
            "nonce": "n-" + secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        params["_verifier"] = verifier
        return params

    def authorize(self, browser: requests.Session, params: dict) -> requests.Response:
        query = {k: v for k, v in params.items() if not k.startswith("_") and v is not None}
        return browser.get(f"{self.url}/authorize", params=query, allow_redirects=False)

    def submit_login(
        self, browser: requests.Session, page: requests.Response, username, password, **extra
    ) -> requests.Response:
        form = hidden_fields(page.text)
        form.update(username=username, password=password)
        form.update(extra)
        form = {k: v for k, v in form.items() if v is not None}
        return browser.post(f"{self.url}/authorize", data=form, allow_redirects=False)

    def login(self, username="alice", password=None, browser=None, headers=None, **overrides):
        """Sign in through the login page; the final response and the request's parameters."""
        browser = browser or requests.Session()
        if headers:
            browser.headers.update(headers)
        params = self.authorize_params(**overrides)
        page = self.authorize(browser, params)
        assert page.status_code == 200, page.text
        if password is None:
            password = USERS[username]["password"]
        return self.submit_login(browser, page, username, password), params

    def code_for(self, username="alice", **overrides) -> tuple[str, dict]:
        response, params = self.login(username, **overrides)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        assert query["state"] == [params["state"]]
        return query["code"][0], params

    def token(self, data: dict, *, basic=True, secret=None) -> requests.Response:
        secret = self.client_secret if secret is None else secret
        if basic:
            return requests.post(f"{self.url}/token", data=data, auth=("jupyterhub", secret))
        data = {**data, "client_id": "jupyterhub", "client_secret": secret}
        return requests.post(f"{self.url}/token", data=data)

    def exchange(self, code: str, params: dict, **kwargs) -> requests.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": params["redirect_uri"],
            "code_verifier": params["_verifier"],
        }
        return self.token(data, **kwargs)

    def tokens_for(self, username="alice", **overrides) -> dict:
        code, params = self.code_for(username, **overrides)
        response = self.exchange(code, params)
        assert response.status_code == 200, response.text
        return response.json()

    def refresh(self, refresh_token: str) -> requests.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def userinfo(self, access_token: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {access_token}"}
        return requests.get(f"{self.url}/userinfo", headers=headers)

    def admin(self, method: str, path: str, token=None, **kwargs) -> requests.Response:
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(method, f"{self.url}/admin{path}", headers=headers, **kwargs)


def hidden_fields(html: str) -> dict:
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', html))


def write_config(folder: Path, seeded: Path, port: int, path: str = "", **overrides) -> Path:
    secrets_dir = folder / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    users_file = secrets_dir / "idp-users.json"
    if not users_file.exists():
        shutil.copy(seeded / "users.json", users_file)
        users_file.chmod(0o600)
    state_dir = folder / "state"
    if not state_dir.exists():
        shutil.copytree(seeded / "state", state_dir)
    config = {
        "issuer": f"http://127.0.0.1:{port}{path}",
        "state_dir": str(state_dir),
        "users_file": str(users_file),
        "admin_token_file": str(secrets_dir / "idp-admin-token"),
        "clients": [
            {
                "client_id": "jupyterhub",
                "name": "Havre notebooks",
                "client_secret_file": str(secrets_dir / "idp-client-jupyterhub"),
                "redirect_uris": [CALLBACK],
                "post_logout_redirect_uris": [LOGOUT_DONE],
            }
        ],
        "access_token_seconds": 600,
        "refresh_token_seconds": 86400,
    }
    config.update(overrides)
    ensure_secret_file(secrets_dir / "idp-client-jupyterhub")
    ensure_secret_file(secrets_dir / "idp-admin-token")
    config_file = folder / "idp.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def start_provider(folder: Path, seeded: Path, path: str = "", **overrides) -> RunningProvider:
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    config_file = write_config(folder, seeded, port, path, **overrides)
    config = load_config(config_file)
    app = make_app(config)
    ready = threading.Event()
    box: dict = {}

    def run() -> None:
        async def serve() -> None:
            server = make_server(app)
            server.add_sockets(sockets)
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()
            server.stop()
            await server.close_all_connections()

        asyncio.run(serve())

    thread = threading.Thread(target=run, name="havre-idp-test", daemon=True)
    thread.start()
    assert ready.wait(10)
    secrets_dir = folder / "secrets"
    return RunningProvider(
        url=config.issuer,
        client_secret=(secrets_dir / "idp-client-jupyterhub").read_text().strip(),
        admin_token=(secrets_dir / "idp-admin-token").read_text().strip(),
        users_file=config.users_file,
        config_file=config_file,
        loop=box["loop"],
        stop_event=box["stop"],
        thread=thread,
    )


@pytest.fixture
def provider_factory(tmp_path, seeded):
    started = []

    def factory(path: str = "", **overrides) -> RunningProvider:
        folder = tmp_path / f"idp{len(started)}"
        folder.mkdir()
        running = start_provider(folder, seeded, path, **overrides)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture
def idp(provider_factory):
    return provider_factory()


def verify_id_token(idp: RunningProvider, id_token: str) -> dict:
    """Check the RS256 signature against /jwks with `cryptography`; return the claims."""
    header_b64, payload_b64, signature_b64 = id_token.split(".")
    header = json.loads(b64url_decode(header_b64))
    assert header["alg"] == "RS256"
    keys = requests.get(f"{idp.url}/jwks").json()["keys"]
    (jwk,) = [k for k in keys if k["kid"] == header["kid"]]
    public_key = rsa.RSAPublicNumbers(
        int.from_bytes(b64url_decode(jwk["e"]), "big"),
        int.from_bytes(b64url_decode(jwk["n"]), "big"),
    ).public_key()
    signing_input = f"{header_b64}.{payload_b64}".encode()
    public_key.verify(
        b64url_decode(signature_b64), signing_input, padding.PKCS1v15(), hashes.SHA256()
    )
    with pytest.raises(InvalidSignature):
        public_key.verify(
            b64url_decode(signature_b64), signing_input + b"x", padding.PKCS1v15(), hashes.SHA256()
        )
    return json.loads(b64url_decode(payload_b64))


# --------------------------------------------------------------------------- discovery


def test_discovery_and_jwks(idp):
    response = requests.get(f"{idp.url}/.well-known/openid-configuration")
    assert response.status_code == 200
    meta = response.json()
    assert meta["issuer"] == idp.url
    for key, suffix in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/logout"),
    ]:
        assert meta[key] == idp.url + suffix
    assert meta["response_types_supported"] == ["code"]
    assert meta["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert set(meta["scopes_supported"]) == {"openid", "profile", "email", "groups"}
    assert {"sub", "groups", "preferred_username", "email", "name"} <= set(meta["claims_supported"])
    (key,) = requests.get(meta["jwks_uri"]).json()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert key["kid"] and "d" not in key and "p" not in key
    assert len(b64url_decode(key["n"])) == 256  # 2048 bits


def test_issuer_with_a_path_prefix(provider_factory):
    idp = provider_factory(path="/idp")
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration").json()
    assert meta["issuer"].endswith("/idp")
    assert meta["token_endpoint"] == idp.url + "/token"
    tokens = idp.tokens_for("alice")
    assert idp.userinfo(tokens["access_token"]).json()["sub"] == "alice"
    root = idp.url.removesuffix("/idp")
    assert requests.get(f"{root}/.well-known/openid-configuration").status_code == 404


# --------------------------------------------------------------------------- the code flow


def test_full_code_flow_with_pkce(idp):
    browser = requests.Session()
    state = "opaque state/with+odd=chars&é %20"
    response, params = idp.login("alice", browser=browser, state=state)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    query = parse_qs(location.query)
    assert query["state"] == [state]  # echoed exactly
    assert query["iss"] == [idp.url]
    code = query["code"][0]
    assert len(b64url_decode(code)) == 32

    response = idp.exchange(code, params)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 600
    assert tokens["scope"] == "openid profile email groups"
    assert tokens["refresh_token"] and tokens["access_token"] != tokens["refresh_token"]

    claims = verify_id_token(idp, tokens["id_token"])
    assert claims["iss"] == idp.url
    assert claims["aud"] == "jupyterhub"
    assert claims["sub"] == "alice"
    assert claims["nonce"] == params["nonce"]
    assert claims["preferred_username"] == "alice"
    assert claims["name"] == "Alice Archer"
    assert claims["email"] == "alice@example.org"
    assert claims["groups"] == ["cardio", "researchers"]
    assert claims["iat"] <= time.time() < claims["exp"]
    assert claims["auth_time"] <= claims["iat"]
    at_hash = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
    assert b64url_decode(claims["at_hash"]) == at_hash
    # an independent JOSE implementation agrees (PyJWT comes with oauthenticator)
    jwk = requests.get(f"{idp.url}/jwks").json()["keys"][0]
    decoded = jwt.decode(
        tokens["id_token"],
        key=jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="jupyterhub",
        issuer=idp.url,
    )
    assert decoded == claims

    info = idp.userinfo(tokens["access_token"])
    assert info.status_code == 200
    assert info.headers["Cache-Control"] == "no-store"
    assert info.json() == {
        "sub": "alice",
        "preferred_username": "alice",
        "name": "Alice Archer",
        "email": "alice@example.org",
        "groups": ["cardio", "researchers"],
    }
    post = requests.post(
        f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert post.json() == info.json()


def test_claims_follow_the_granted_scopes(idp):
    tokens = idp.tokens_for("alice", scope="openid unknown-scope")
    assert tokens["scope"] == "openid"
    assert idp.userinfo(tokens["access_token"]).json() == {"sub": "alice"}
    claims = verify_id_token(idp, tokens["id_token"])
    assert "groups" not in claims and "email" not in claims


def test_login_page_is_plain_and_safe(idp):
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    assert page.status_code == 200
    html = page.text
    assert "<title>Havre sign-in</title>" in html
    assert "Havre notebooks" in html  # the client's name
    assert '<label for="username">' in html and '<label for="password">' in html
    assert re.search(r'<input id="username"[^>]*autofocus', html)
    assert "http://" not in html and "https://" not in html  # no external resources
    assert "<script" not in html
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self' http://127.0.0.1:8000" in csp
    nonce = re.search(r"style-src 'nonce-([^']+)'", csp).group(1)
    assert f'<style nonce="{nonce}">' in html
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Server" not in page.headers
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert set(hidden_fields(html)) == {"request_id", "csrf_token"}


def test_security_headers_on_errors_too(idp):
    for response in (
        requests.get(f"{idp.url}/no-such-page"),
        requests.get(f"{idp.url}/token"),  # 405
        requests.post(f"{idp.url}/token", data={}),
    ):
        assert response.status_code >= 400
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Traceback" not in response.text


# --------------------------------------------------------------------------- login failures


def test_wrong_password_shows_the_login_page_again_without_a_code(idp):
    response, _ = idp.login("alice", password="wrong password")
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "Incorrect username or password." in response.text
    assert 'role="alert"' in response.text
    assert 'value="alice"' in response.text  # the username is kept
    assert "code=" not in response.text
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    response = idp.submit_login(browser, page, '"><script>alert(1)</script>', "x")
    assert "<script>" not in response.text
    assert "&quot;&gt;&lt;script&gt;" in response.text


def test_unknown_user_gets_the_same_response_as_a_wrong_password(idp, monkeypatch):
    hashed = []
    real_verify = oidc_provider.verify_password

    def counting_verify(password, stored):
        hashed.append(stored)
        return real_verify(password, stored)

    monkeypatch.setattr(oidc_provider, "verify_password", counting_verify)

    def attempt(username):
        browser = requests.Session()
        params = idp.authorize_params()
        page = idp.authorize(browser, params)
        before = len(hashed)
        response = idp.submit_login(browser, page, username, "not the password")
        fields = hidden_fields(page.text)
        body = response.text.replace(username, "USER")
        for value in fields.values():
            body = body.replace(value, "X")
        body = re.sub(r'nonce="[^"]+"', "", body)
        return response.status_code, body, len(hashed) - before

    known = attempt("alice")
    unknown = attempt("nobody")
    assert known[:2] == unknown[:2]
    assert known[0] == 200 and "Incorrect username or password." in known[1]
    # both hashed the password once (an unknown user against a dummy hash): the answer takes as
    # long, so it doesn't tell which usernames exist
    assert known[2] == unknown[2] == 1


def test_rate_limit_after_repeated_failures(idp):
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    for _ in range(5):
        response = idp.submit_login(browser, page, "alice", "guess")
        assert response.status_code == 200
    # even the right password is refused now
    response = idp.submit_login(browser, page, "alice", USERS["alice"]["password"])
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.text
    assert response.headers["Retry-After"] == "60"
    assert "Location" not in response.headers


def test_rate_limit_per_username_and_per_address(provider_factory):
    # behind_proxy: true makes the provider trust X-Forwarded-For for the client address
    idp = provider_factory(behind_proxy=True, login_failures_per_minute=3)

    def attempt(username, password, ip):
        browser = requests.Session()
        browser.headers["X-Forwarded-For"] = ip
        page = idp.authorize(browser, idp.authorize_params())
        return idp.submit_login(browser, page, username, password).status_code

    # per username: failures for alice from three addresses lock alice out everywhere
    for i in range(3):
        assert attempt("alice", "guess", f"10.0.0.{i}") == 200
    assert attempt("alice", USERS["alice"]["password"], "10.0.0.9") == 429
    # ... but not other users
    assert attempt("olivia", USERS["olivia"]["password"], "10.0.0.9") == 302
    # per address: three failures for different (unknown) users lock the address out
    for name in ("u1", "u2", "u3"):
        assert attempt(name, "guess", "10.0.1.1") == 200
    assert attempt("mallory", USERS["mallory"]["password"], "10.0.1.1") == 429
    assert attempt("mallory", USERS["mallory"]["password"], "10.0.1.2") == 302


def test_csrf_token_and_cookie_are_required(idp):
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    password = USERS["alice"]["password"]
    for extra in ({"csrf_token": None}, {"csrf_token": "forged"}, {"request_id": "forged"}):
        response = idp.submit_login(browser, page, "alice", password, **extra)
        assert response.status_code == 400, extra
        assert "Location" not in response.headers
        assert "expired" in response.text
    # the right form fields from another browser (without the cookie) are refused too
    other = requests.Session()
    response = idp.submit_login(other, page, "alice", password)
    assert response.status_code == 400
    # the genuine form still works, once
    response = idp.submit_login(browser, page, "alice", password)
    assert response.status_code == 302
    again = idp.submit_login(browser, page, "alice", password)
    assert again.status_code == 400


# --------------------------------------------------------------------------- authorize errors


def error_redirect(response: requests.Response) -> dict:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    query = parse_qs(location.query)
    assert "code" not in query
    return {k: v[0] for k, v in query.items()}


def test_pkce_s256_is_required(idp):
    browser = requests.Session()
    cases = [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": None},  # defaults to plain
        {"code_challenge_method": "plain"},
        {"code_challenge": "too-short", "code_challenge_method": "S256"},
    ]
    for overrides in cases:
        params = idp.authorize_params(**overrides)
        query = error_redirect(idp.authorize(browser, params))
        assert query["error"] == "invalid_request", overrides
        assert query["state"] == params["state"]
        assert query["iss"] == idp.url


def test_other_redirectable_authorize_errors(idp):
    browser = requests.Session()
    for overrides, error in [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "profile groups"}, "invalid_scope"),
        ({"prompt": "none"}, "login_required"),
        ({"request": "eyJ..."}, "request_not_supported"),
    ]:
        query = error_redirect(idp.authorize(browser, idp.authorize_params(**overrides)))
        assert query["error"] == error, overrides
    query = error_redirect(idp.authorize(browser, idp.authorize_params(state=None)))
    assert query["error"] == "invalid_request" and "state" not in query


def test_unregistered_redirect_uri_or_client_gets_an_error_page(idp):
    browser = requests.Session()
    for overrides in [
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": CALLBACK + "/"},  # exact match only
        {"redirect_uri": CALLBACK + "?x=1"},
        {"redirect_uri": None},
        {"client_id": "someone-else"},
        {"client_id": None},
    ]:
        response = idp.authorize(browser, idp.authorize_params(**overrides))
        assert response.status_code == 400, overrides
        assert "Location" not in response.headers
        assert "evil.example" not in response.text
        assert "<h1>" in response.text
    # a duplicated redirect_uri is not trusted either
    query = "&".join(
        f"{k}={v}"
        for k, v in idp.authorize_params().items()
        if not k.startswith("_") and k != "redirect_uri"
    )
    response = browser.get(
        f"{idp.url}/authorize?{query}&redirect_uri={CALLBACK}&redirect_uri=https://evil.example/",
        allow_redirects=False,
    )
    assert response.status_code == 400 and "Location" not in response.headers


# --------------------------------------------------------------------------- token endpoint


def test_wrong_code_verifier_is_invalid_grant(idp):
    code, params = idp.code_for("alice")
    response = idp.exchange(code, {**params, "_verifier": pkce()[0]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    # the code was spent by that attempt
    response = idp.exchange(code, params)
    assert response.json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_at_the_token_endpoint(idp):
    code, params = idp.code_for("alice")
    response = idp.exchange(code, {**params, "redirect_uri": CALLBACK + "/other"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_code_reuse_is_refused_and_revokes_the_first_tokens(idp):
    code, params = idp.code_for("alice")
    first = idp.exchange(code, params)
    assert first.status_code == 200
    tokens = first.json()
    assert idp.userinfo(tokens["access_token"]).status_code == 200

    second = idp.exchange(code, params)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert idp.userinfo(tokens["access_token"]).status_code == 401
    assert idp.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_client_authentication(idp):
    code, params = idp.code_for("alice")
    for kwargs in ({"secret": "x" * 43}, {"secret": "x" * 43, "basic": False}):
        response = idp.exchange(code, params, **kwargs)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    unknown = requests.post(
        f"{idp.url}/token",
        data={"grant_type": "authorization_code", "code": code},
        auth=("nobody", idp.client_secret),
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    anonymous = requests.post(
        f"{idp.url}/token", data={"grant_type": "authorization_code", "code": code}
    )
    assert anonymous.status_code == 401
    # failed client authentication didn't spend the code; client_secret_post works
    response = idp.exchange(code, params, basic=False)
    assert response.status_code == 200, response.text


def test_token_request_errors(idp):
    def post(data):
        return requests.post(f"{idp.url}/token", data=data, auth=("jupyterhub", idp.client_secret))

    assert post({}).json()["error"] == "invalid_request"
    assert post({"grant_type": "password"}).json()["error"] == "unsupported_grant_type"
    assert post({"grant_type": "authorization_code"}).json()["error"] == "invalid_request"
    response = post({"grant_type": "authorization_code", "code": "made-up"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    repeated = post([("grant_type", "refresh_token"), ("grant_type", "refresh_token")])
    assert repeated.json()["error"] == "invalid_request"
    both = requests.post(
        f"{idp.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_secret": "y"},
        auth=("jupyterhub", idp.client_secret),
    )
    assert both.json()["error"] == "invalid_request"


def test_refresh_rotation_and_reuse_detection(idp):
    tokens = idp.tokens_for("alice")
    response = idp.refresh(tokens["refresh_token"])
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["access_token"] != tokens["access_token"]
    claims = verify_id_token(idp, rotated["id_token"])
    assert claims["groups"] == ["cardio", "researchers"] and "nonce" not in claims
    assert idp.userinfo(rotated["access_token"]).status_code == 200

    # the old refresh token is spent; presenting it again revokes the whole sign-in
    reused = idp.refresh(tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert idp.userinfo(rotated["access_token"]).status_code == 401
    assert idp.refresh(rotated["refresh_token"]).json()["error"] == "invalid_grant"


def _with_another_client(provider_factory, tmp_path):
    """A provider with a second client, ``other-app`` (a secret and a redirect URI of its
    own), beside jupyterhub: the provider, the other client's secret, and a POST to the token
    endpoint as the other client."""
    other_secret = ensure_secret_file(tmp_path / "other-secret")
    # the factory's first provider lives in tmp_path / "idp0" and writes this secret there
    jupyterhub = {
        "client_id": "jupyterhub",
        "client_secret_file": str(tmp_path / "idp0" / "secrets" / "idp-client-jupyterhub"),
        "redirect_uris": [CALLBACK],
    }
    other = {
        "client_id": "other-app",
        "client_secret_file": str(tmp_path / "other-secret"),
        "redirect_uris": ["http://127.0.0.1:9000/callback"],
    }
    idp = provider_factory(clients=[jupyterhub, other])

    def as_other(data):
        return requests.post(f"{idp.url}/token", data=data, auth=("other-app", other_secret))

    return idp, other_secret, as_other


def test_codes_and_tokens_are_bound_to_their_client(provider_factory, tmp_path):
    idp, other_secret, as_other = _with_another_client(provider_factory, tmp_path)
    tokens = idp.tokens_for("alice")
    code, params = idp.code_for("alice")

    stolen_code = as_other(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": params["_verifier"],
        }
    )
    assert stolen_code.status_code == 400 and stolen_code.json()["error"] == "invalid_grant"
    stolen_refresh = as_other(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert stolen_refresh.json()["error"] == "invalid_grant"
    revoke = requests.post(
        f"{idp.url}/revoke",
        data={"token": tokens["access_token"]},
        auth=("other-app", other_secret),
    )
    assert revoke.status_code == 200
    # none of that harmed the rightful client
    assert idp.userinfo(tokens["access_token"]).status_code == 200
    assert idp.refresh(tokens["refresh_token"]).status_code == 200
    assert idp.exchange(code, params).status_code == 200
    # the other client's redirect URI is not valid for jupyterhub
    browser = requests.Session()
    page = idp.authorize(
        browser, idp.authorize_params(redirect_uri="http://127.0.0.1:9000/callback")
    )
    assert page.status_code == 400 and "Location" not in page.headers


def test_group_change_through_the_admin_api_shows_in_userinfo_and_refresh(idp):
    tokens = idp.tokens_for("alice")
    response = idp.admin("PUT", "/users/alice", json={"groups": ["diabetes"]})
    assert response.status_code == 200, response.text
    assert response.json()["groups"] == ["diabetes"]
    assert response.json()["email"] == "alice@example.org"  # kept
    assert idp.userinfo(tokens["access_token"]).json()["groups"] == ["diabetes"]
    refreshed = idp.refresh(tokens["refresh_token"]).json()
    assert verify_id_token(idp, refreshed["id_token"])["groups"] == ["diabetes"]
    # the password is unchanged
    assert idp.tokens_for("alice")["access_token"]


def test_deleted_user_loses_userinfo_and_refresh(idp):
    tokens = idp.tokens_for("olivia")
    response = idp.admin("DELETE", "/users/olivia")
    assert response.status_code == 200
    assert response.json() == {"deleted": "olivia", "revoked": 1}
    assert idp.userinfo(tokens["access_token"]).status_code == 401
    assert idp.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    response, _ = idp.login("olivia")
    assert response.status_code == 200 and "Incorrect username or password." in response.text
    assert idp.admin("DELETE", "/users/olivia").status_code == 404


def test_user_deleted_from_the_file_by_hand_cannot_refresh(idp):
    tokens = idp.tokens_for("alice")
    users = read_users_file(idp.users_file)
    del users["alice"]
    write_users_file(idp.users_file, users)
    response = idp.refresh(tokens["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert idp.userinfo(tokens["access_token"]).status_code == 401


def test_expired_access_token(provider_factory):
    idp = provider_factory(access_token_seconds=1)
    tokens = idp.tokens_for("alice")
    assert tokens["expires_in"] == 1
    assert idp.userinfo(tokens["access_token"]).status_code == 200
    deadline = time.monotonic() + 30  # the token lives one second: wait for it to expire
    response = idp.userinfo(tokens["access_token"])
    while response.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        response = idp.userinfo(tokens["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # the refresh token still works
    refreshed = idp.refresh(tokens["refresh_token"]).json()
    assert idp.userinfo(refreshed["access_token"]).status_code == 200


def test_userinfo_needs_a_valid_bearer_token(idp):
    response = requests.get(f"{idp.url}/userinfo")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert idp.userinfo("made-up").status_code == 401
    tokens = idp.tokens_for("alice")
    assert idp.userinfo(tokens["refresh_token"]).status_code == 401  # not an access token


# --------------------------------------------------------------------------- revocation


def test_revocation_endpoint(idp):
    tokens = idp.tokens_for("alice")

    def revoke(token, secret=None):
        return requests.post(
            f"{idp.url}/revoke",
            data={"token": token},
            auth=("jupyterhub", secret or idp.client_secret),
        )

    assert revoke(tokens["access_token"], secret="x" * 43).status_code == 401
    assert idp.userinfo(tokens["access_token"]).status_code == 200
    assert revoke(tokens["access_token"]).status_code == 200
    assert idp.userinfo(tokens["access_token"]).status_code == 401
    refreshed = idp.refresh(tokens["refresh_token"]).json()  # refresh token still valid
    assert revoke(refreshed["refresh_token"]).status_code == 200
    assert idp.userinfo(refreshed["access_token"]).status_code == 401  # whole sign-in ended
    assert revoke("unknown-token").status_code == 200  # RFC 7009 §2.2


def test_admin_revoke_tokens(idp):
    first = idp.tokens_for("alice")
    second = idp.tokens_for("alice")
    other = idp.tokens_for("olivia")
    response = idp.admin("POST", "/users/alice/revoke-tokens")
    assert response.status_code == 200
    assert response.json() == {"username": "alice", "revoked": 2}
    for tokens in (first, second):
        assert idp.userinfo(tokens["access_token"]).status_code == 401
        assert idp.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert idp.userinfo(other["access_token"]).status_code == 200


# --------------------------------------------------------------------------- admin API


def test_admin_api_requires_the_admin_token(idp):
    for token in ("", "wrong-token", idp.client_secret):
        for method, path, kwargs in [
            ("GET", "/users", {}),
            ("PUT", "/users/eve", {"json": {"password": "eve-password", "groups": ["admin"]}}),
            ("DELETE", "/users/alice", {}),
            ("POST", "/users/alice/revoke-tokens", {}),
        ]:
            response = idp.admin(method, path, token=token, **kwargs)
            assert response.status_code == 403, (token, method, path)
            assert response.json()["error"] == "forbidden"
    basic = requests.get(f"{idp.url}/admin/users", auth=("admin", idp.admin_token))
    assert basic.status_code == 403
    assert "eve" not in read_users_file(idp.users_file)
    assert "alice" in read_users_file(idp.users_file)


def test_admin_api_creates_and_updates_users(idp):
    listing = idp.admin("GET", "/users")
    assert listing.status_code == 200
    assert [u["username"] for u in listing.json()["users"]] == ["alice", "mallory", "olivia"]
    assert "password_hash" not in listing.text and "scrypt" not in listing.text

    assert idp.admin("PUT", "/users/dave", json={"groups": ["cardio"]}).status_code == 400
    for body in (
        {"password": "short"},
        {"password": "long-enough", "groups": "cardio"},
        {"password": "long-enough", "groups": ["bad group"]},
        {"password": "long-enough", "role": "admin"},
        [1, 2],
    ):
        assert idp.admin("PUT", "/users/dave", json=body).status_code == 400, body
    assert idp.admin("PUT", "/users/Not%20Valid", json={"password": "x" * 10}).status_code == 400

    body = {"password": "dave-password", "groups": ["cardio"], "email": "d@example.org"}
    created = idp.admin("PUT", "/users/dave", json=body)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "username": "dave",
        "groups": ["cardio"],
        "email": "d@example.org",
        "name": "",
    }
    assert stat.S_IMODE(idp.users_file.stat().st_mode) == 0o600
    stored = read_users_file(idp.users_file)["dave"]
    assert verify_password("dave-password", stored.password_hash)
    tokens = idp.tokens_for("dave", password="dave-password")
    assert idp.userinfo(tokens["access_token"]).json()["groups"] == ["cardio"]

    changed = idp.admin("PUT", "/users/dave", json={"password": "new-dave-password"})
    assert changed.status_code == 200 and changed.json()["groups"] == ["cardio"]
    response, _ = idp.login("dave", password="dave-password")
    assert response.status_code == 200  # old password refused
    assert idp.admin("GET", "/users/dave").json()["username"] == "dave"
    assert idp.admin("GET", "/users/nobody").status_code == 404


def test_admin_api_is_off_without_an_admin_token_file(provider_factory):
    idp = provider_factory(admin_token_file=None)
    assert idp.admin("GET", "/users").status_code == 404
    assert idp.admin("PUT", "/users/eve", json={"password": "eve-password"}).status_code == 404


# --------------------------------------------------------------------------- logout


def test_logout(idp):
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    assert browser.cookies.get("havre_idp_browser")
    response = browser.get(f"{idp.url}/logout", allow_redirects=False)
    assert response.status_code == 200 and "signed out" in response.text
    assert response.headers["Set-Cookie"].startswith('havre_idp_browser=""; expires=')
    assert not browser.cookies.get("havre_idp_browser")
    # the login form opened before the logout no longer works, even with the old cookie
    browser.cookies.set("havre_idp_browser", page.cookies["havre_idp_browser"])
    stale = idp.submit_login(browser, page, "alice", USERS["alice"]["password"])
    assert stale.status_code == 400

    registered = browser.get(
        f"{idp.url}/logout",
        params={"post_logout_redirect_uri": LOGOUT_DONE, "state": "s1", "client_id": "jupyterhub"},
        allow_redirects=False,
    )
    assert registered.status_code == 302
    assert registered.headers["Location"] == LOGOUT_DONE + "?state=s1"
    for target in ("https://evil.example/", CALLBACK):
        refused = browser.get(
            f"{idp.url}/logout", params={"post_logout_redirect_uri": target}, allow_redirects=False
        )
        assert refused.status_code == 400 and "Location" not in refused.headers


# --------------------------------------------------------------------------- config and files


def test_config_errors_name_the_key(tmp_path, seeded):
    base = yaml.safe_load(write_config(tmp_path, seeded, 8001).read_text())

    def problems(**changes):
        config = {**base, **changes}
        config = {k: v for k, v in config.items() if v is not None}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(ConfigError) as info:
            load_config(path)
        return "\n".join(info.value.problems)

    assert "issuer:" in problems(issuer=None)
    assert "issuer:" in problems(issuer="ftp://example.org")
    assert "issuer:" in problems(issuer="http://example.org/?x=1")
    assert "users_file:" in problems(users_file=None)
    assert "clients:" in problems(clients=[])
    assert "colour: unknown key 'colour' (allowed keys: access_token_seconds," in problems(
        colour="blue"
    )
    assert "isuer: unknown key 'isuer', did you mean 'issuer'?" in problems(isuer="x")
    assert "access_token_seconds: must be a whole number from 1 to 86400 (got '600')" in problems(
        access_token_seconds="600"
    )
    assert "behind_proxy:" in problems(behind_proxy="yes")
    client = base["clients"][0]
    text = problems(clients=[{**client, "redirect_uris": []}])
    assert "clients[0].redirect_uris:" in text
    text = problems(clients=[{**client, "redirect_uris": ["/relative"], "secret": "x"}])
    assert "clients[0].redirect_uris[0]:" in text and "clients[0].secret: unknown key" in text
    misspelt = {k: v for k, v in client.items() if k != "redirect_uris"}
    text = problems(clients=[{**misspelt, "redirect_uri": [CALLBACK]}])
    assert "redirect_uri: unknown key 'redirect_uri', did you mean 'redirect_uris'?" in text
    assert "clients[0].redirect_uris: must be a list of URLs (at least one)" in text
    assert "clients[1].client_id: duplicate" in problems(clients=[client, client])

    secret_file = Path(client["client_secret_file"])
    secret_file.chmod(0o644)
    text = problems()
    assert "clients[0].client_secret_file:" in text and "chmod 600" in text
    secret_file.chmod(0o600)
    Path(base["admin_token_file"]).write_text("short")
    assert "admin_token_file:" in problems()
    Path(base["admin_token_file"]).unlink()
    assert "admin_token_file:" in problems() and "--init" in problems()


def test_main_init_creates_private_files_and_refuses_bad_config(tmp_path, capsys):
    config = {
        "issuer": "http://127.0.0.1:8001",
        "state_dir": "state",
        "users_file": "secrets/users.json",
        "admin_token_file": "secrets/admin-token",
        "clients": [
            {
                "client_id": "jupyterhub",
                "client_secret_file": "secrets/client-jupyterhub",
                "redirect_uris": [CALLBACK],
            }
        ],
    }
    path = tmp_path / "idp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 78  # secrets missing
    assert "--init" in capsys.readouterr().err
    assert main(["--config", str(path), "--init"]) == 0
    for name in ("secrets/users.json", "secrets/admin-token", "secrets/client-jupyterhub"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    key_file = tmp_path / "state" / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    token = (tmp_path / "secrets" / "admin-token").read_text()
    key = key_file.read_bytes()
    assert main(["--config", str(path), "--init"]) == 0  # keeps what exists
    assert (tmp_path / "secrets" / "admin-token").read_text() == token
    assert key_file.read_bytes() == key
    assert load_config(path).issuer == "http://127.0.0.1:8001"


def test_signing_key_is_kept_across_restarts(provider_factory):
    idp = provider_factory()
    kid = requests.get(f"{idp.url}/jwks").json()["keys"][0]["kid"]
    config = load_config(idp.config_file)
    app = make_app(config)  # a restart
    assert app.settings["havre_idp_provider"].key.kid == kid


def restart(idp: RunningProvider, seeded: Path) -> RunningProvider:
    """Stop the provider and start a new process-like instance on the same folder."""
    idp.stop()
    return start_provider(idp.config_file.parent, seeded)


def test_a_restart_signs_nobody_out(tmp_path, seeded):
    idp = start_provider(tmp_path, seeded)
    kept = idp.tokens_for("alice")
    spent = idp.tokens_for("olivia")
    rotated = idp.refresh(spent["refresh_token"]).json()
    revoked = idp.tokens_for("alice")
    assert idp.admin("POST", "/users/alice/revoke-tokens").status_code == 200
    kept = idp.tokens_for("alice")  # a sign-in after the revocation

    idp = restart(idp, seeded)
    try:
        # control: a token the provider never issued is refused by the new instance
        assert idp.userinfo(secrets.token_urlsafe(32)).status_code == 401
        assert idp.userinfo(kept["access_token"]).status_code == 200
        refreshed = idp.refresh(kept["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        # revoked before the restart: still revoked
        assert idp.userinfo(revoked["access_token"]).status_code == 401
        assert idp.refresh(revoked["refresh_token"]).json()["error"] == "invalid_grant"
        # a refresh token spent before the restart is still spent: its replay ends the sign-in
        assert idp.refresh(spent["refresh_token"]).json()["error"] == "invalid_grant"
        assert idp.userinfo(rotated["access_token"]).status_code == 401
    finally:
        idp.stop()


def test_the_tokens_file_is_private_and_holds_no_token(tmp_path, seeded):
    idp = start_provider(tmp_path, seeded)
    try:
        tokens = idp.tokens_for("alice")
    finally:
        idp.stop()
    path = tmp_path / "state" / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for name in ("access_token", "refresh_token"):
        assert tokens[name] not in text
    assert hashlib.sha256(tokens["access_token"].encode()).hexdigest() in text


def test_an_unreadable_tokens_file_is_set_aside_and_everyone_signs_in_again(
    tmp_path, seeded, caplog
):
    idp = start_provider(tmp_path, seeded)
    tokens = idp.tokens_for("alice")
    idp.stop()
    path = tmp_path / "state" / "tokens.json"
    path.write_text('{"schema": 1, "families": ')  # cut short, as by a full disk
    idp = start_provider(tmp_path, seeded)
    try:
        assert idp.userinfo(tokens["access_token"]).status_code == 401
        assert (tmp_path / "state" / "tokens.json.corrupt").exists()
        assert "set aside" in caplog.text
        assert idp.userinfo(idp.tokens_for("alice")["access_token"]).status_code == 200
    finally:
        idp.stop()


def test_seed_users_is_idempotent_and_validates(tmp_path):
    path = tmp_path / "users.json"
    assert seed_users(path, USERS) == ["alice", "olivia", "mallory"]
    before = path.read_text()
    assert seed_users(path, USERS) == []
    assert path.read_text() == before  # same hashes kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    seed_users(path, {"alice": {"groups": ["diabetes"]}})
    users = read_users_file(path)
    assert users["alice"].groups == ("diabetes",)
    assert verify_password(USERS["alice"]["password"], users["alice"].password_hash)
    with pytest.raises(ValueError, match="password"):
        seed_users(path, {"newbie": {"groups": []}})
    with pytest.raises(ValueError, match="username"):
        write_users_file(path, {"Bad Name": {"password_hash": "scrypt$1$1$1$a$b"}})
    with pytest.raises(ValueError, match="password_hash"):
        write_users_file(path, {"bob": {"password_hash": "plaintext"}})
    assert read_users_file(path) == users  # nothing written by the failed calls


# --------------------------------------------------------------------------- oauthenticator


class CallbackRequest:
    """What OAuthenticator reads from the hub's /oauth_callback handler.

    ``build_access_tokens_request_params`` takes the ``code`` argument and the state cookie
    (where OAuthLoginHandler keeps the PKCE code_verifier); this carries exactly those.
    """

    def __init__(self, code: str, state_cookie: str) -> None:
        self.code = code
        self.state_cookie = state_cookie

    def get_argument(self, name, default=None):
        return self.code if name == "code" else default

    def get_state_cookie(self):
        return self.state_cookie


class HubUser:
    """What ``OAuthenticator.refresh_user`` reads from a hub user."""

    def __init__(self, name: str, auth_state: dict) -> None:
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state


def make_authenticator(idp: RunningProvider, **extra):
    from oauthenticator.generic import GenericOAuthenticator

    return GenericOAuthenticator(
        client_id="jupyterhub",
        client_secret=idp.client_secret,
        authorize_url=f"{idp.url}/authorize",
        token_url=f"{idp.url}/token",
        userdata_url=f"{idp.url}/userinfo",
        oauth_callback_url=CALLBACK,
        scope=["openid", "profile", "email", "groups"],
        username_claim="preferred_username",
        enable_pkce=True,
        manage_groups=True,
        auth_state_groups_key="oauth_user.groups",
        allowed_groups={"cardio", "diabetes", "output-checkers"},
        admin_groups={"hub-admins"},
        enable_auth_state=True,
        **extra,
    )


def hub_login(idp: RunningProvider, authenticator, username: str) -> CallbackRequest:
    """Do what the hub's OAuthLoginHandler and the user's browser do; return the callback."""
    from oauthenticator.oauth2 import OAuthLoginHandler, _serialize_state

    verifier, challenge = OAuthLoginHandler._generate_pkce_params(None)
    state_id = uuid.uuid4().hex
    state_cookie = _serialize_state(
        {"state_id": state_id, "next_url": None, "code_verifier": verifier}
    )
    params = {
        "redirect_uri": authenticator.get_callback_url(None),
        "client_id": authenticator.client_id,
        "response_type": "code",
        "scope": " ".join(authenticator.scope),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": _serialize_state({"state_id": state_id}),
    }
    browser = requests.Session()
    page = browser.get(authenticator.authorize_url, params=params, allow_redirects=False)
    assert page.status_code == 200, page.text
    response = idp.submit_login(browser, page, username, USERS[username]["password"])
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["state"] == [params["state"]]
    return CallbackRequest(query["code"][0], state_cookie)


@pytest.mark.parametrize("basic_auth", [False, True], ids=["client_secret_post", "basic"])
def test_generic_oauthenticator_signs_in_through_the_provider(idp, basic_auth):
    async def scenario():
        authenticator = make_authenticator(idp, basic_auth=basic_auth)
        callback = hub_login(idp, authenticator, "alice")
        # authenticate(): build_access_tokens_request_params -> get_token_info ->
        # token_to_user -> update_auth_model -> managed groups
        auth_model = await authenticator.authenticate(callback)
        assert auth_model["name"] == "alice"
        assert auth_model["groups"] == ["cardio", "researchers"]
        assert auth_model["admin"] is False
        auth_state = auth_model["auth_state"]
        assert auth_state["oauth_user"]["email"] == "alice@example.org"
        assert auth_state["scope"] == ["openid", "profile", "email", "groups"]
        assert auth_state["refresh_token"] and auth_state["id_token"]
        assert await authenticator.check_allowed("alice", auth_model) is True

        # a user outside allowed_groups is authenticated but not allowed in
        mallory = await authenticator.authenticate(hub_login(idp, authenticator, "mallory"))
        assert mallory["groups"] == []
        assert await authenticator.check_allowed("mallory", mallory) is False

        # the sysadmin moves alice; the hub's access token is revoked, so refresh_user
        # falls back to the refresh_token grant and picks up the new groups
        response = idp.admin("PUT", "/users/alice", json={"groups": ["diabetes", "hub-admins"]})
        assert response.status_code == 200
        revoked = requests.post(
            f"{idp.url}/revoke",
            data={"token": auth_state["access_token"]},
            auth=("jupyterhub", idp.client_secret),
        )
        assert revoked.status_code == 200
        refreshed = await authenticator.refresh_user(HubUser("alice", auth_state))
        assert refreshed["name"] == "alice"
        assert refreshed["groups"] == ["diabetes", "hub-admins"]
        assert refreshed["admin"] is True
        new_state = refreshed["auth_state"]
        assert new_state["access_token"] != auth_state["access_token"]
        assert new_state["refresh_token"] != auth_state["refresh_token"]

        # after the admin revokes alice's tokens, the hub must send her to sign in again
        idp.admin("POST", "/users/alice/revoke-tokens")
        assert await authenticator.refresh_user(HubUser("alice", new_state)) is False

    asyncio.run(scenario())


def test_oauthenticator_without_pkce_is_refused(idp):
    """With enable_pkce=False the hub gets an error back instead of a login page."""
    authenticator = make_authenticator(idp)
    params = {
        "redirect_uri": CALLBACK,
        "client_id": "jupyterhub",
        "response_type": "code",
        "scope": " ".join(authenticator.scope),
        "state": "abc",
    }
    response = requests.get(authenticator.authorize_url, params=params, allow_redirects=False)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "PKCE" in query["error_description"][0]


def test_logs_do_not_contain_secrets(idp, caplog):
    caplog.set_level("INFO", logger="havre.idp")
    tokens = idp.tokens_for("alice")
    idp.userinfo(tokens["access_token"])
    idp.login("alice", password="a wrong password")
    text = caplog.text
    assert "Signed in alice to jupyterhub" in text and "Failed sign-in for 'alice'" in text
    for secret in (
        tokens["access_token"],
        tokens["refresh_token"],
        USERS["alice"]["password"],
        "a wrong password",
        idp.client_secret,
        "code=",
    ):
        assert secret not in text


# --------------------------------------------------------------------------- Argon2id, TLS


def _set_hash(users_file: Path, username: str, password_hash: str) -> None:
    users = read_users_file(users_file)
    entries = {name: rec.to_json() for name, rec in users.items()}
    entries[username]["password_hash"] = password_hash
    write_users_file(users_file, entries)


def test_an_old_scrypt_hash_signs_in_and_is_rewritten_as_argon2id(idp, caplog):
    caplog.set_level("INFO", logger="havre.idp")
    password = USERS["alice"]["password"]
    old = legacy_scrypt_hash(password)
    _set_hash(idp.users_file, "alice", old)
    before = read_users_file(idp.users_file)["alice"]
    # a wrong password leaves the old hash alone
    response, _ = idp.login("alice", password="not alice's password")
    assert response.status_code == 200
    assert read_users_file(idp.users_file)["alice"].password_hash == old
    # the right one signs in and the stored hash becomes Argon2id of the same password
    code, params = idp.code_for("alice")
    assert idp.exchange(code, params).status_code == 200
    after = read_users_file(idp.users_file)["alice"]
    assert after.password_hash.startswith("$argon2id$")
    assert verify_password(password, after.password_hash)
    assert (after.groups, after.email, after.name) == (before.groups, before.email, before.name)
    assert stat.S_IMODE(idp.users_file.stat().st_mode) == 0o600
    assert "Upgraded the password hash of alice to Argon2id" in caplog.text
    # and the next sign-in keeps that hash
    idp.code_for("alice")
    assert read_users_file(idp.users_file)["alice"].password_hash == after.password_hash


def test_users_made_by_the_provider_get_argon2id_hashes(idp, tmp_path):
    created = idp.admin("PUT", "/users/dave", json={"password": "dave-password", "groups": []})
    assert created.status_code == 201, created.text
    assert read_users_file(idp.users_file)["dave"].password_hash.startswith("$argon2id$")
    seed_users(tmp_path / "users.json", {"erin": {"password": "erin-password"}})
    assert read_users_file(tmp_path / "users.json")["erin"].password_hash.startswith("$argon2id$")


def test_an_unknown_hash_scheme_in_the_users_file_is_refused_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="must be an Argon2id \\(or older scrypt\\) hash"):
        write_users_file(tmp_path / "u.json", {"bob": {"password_hash": "md5$abc"}})


def _self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    return self_signed(folder, host, key_type="rsa")


def test_the_sign_in_page_is_served_over_tls_with_the_given_certificate(tmp_path, seeded):
    from havre.idp.server import tls_context

    cert_file, key_file = _self_signed(tmp_path)
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    folder = tmp_path / "idp"
    folder.mkdir()
    config = load_config(write_config(folder, seeded, port, issuer=f"https://127.0.0.1:{port}"))
    app = make_app(config)
    box: dict = {}
    ready = threading.Event()

    async def serve() -> None:
        server = make_server(app, tls_context(cert_file, key_file))
        server.add_sockets(sockets)
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await box["stop"].wait()
        server.stop()
        await server.close_all_connections()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        base = f"https://127.0.0.1:{port}"
        discovery = requests.get(f"{base}/.well-known/openid-configuration", verify=cert_file)
        assert discovery.status_code == 200
        assert discovery.json()["authorization_endpoint"] == f"{base}/authorize"
        running = RunningProvider(base, "", "", config.users_file, folder, None, None, thread)
        browser = requests.Session()
        query = {k: v for k, v in running.authorize_params().items() if not k.startswith("_")}
        page = browser.get(f"{base}/authorize", params=query, verify=cert_file)
        assert page.status_code == 200 and 'name="password"' in page.text
        # the browser cookie is Secure on an https issuer
        assert "secure" in page.headers["Set-Cookie"].lower()
        form = {**hidden_fields(page.text), "username": "alice"}
        form["password"] = USERS["alice"]["password"]
        response = browser.post(
            f"{base}/authorize", data=form, allow_redirects=False, verify=cert_file
        )
        assert response.status_code == 302 and "code=" in response.headers["Location"]
        # nothing is answered in clear on that port
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=5)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def test_a_bad_tls_certificate_is_refused_with_a_message(tmp_path, seeded, capsys):
    cert_file, _ = _self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = _self_signed(other)
    config_file = write_config(tmp_path, seeded, 9)
    args = ["--config", str(config_file), "--tls-cert", str(cert_file)]
    assert main([*args, "--tls-key", str(wrong_key)]) == 78
    assert "can't use the TLS certificate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args)  # a certificate without its key
    assert "give both --tls-cert and --tls-key" in capsys.readouterr().err


def test_password_checks_run_at_most_two_at_once(idp, monkeypatch):
    """A burst of sign-in attempts queues for the hash pool instead of taking 64 MiB each."""
    lock = threading.Lock()
    active, most, release = [0], [0], threading.Event()
    real_verify = oidc_provider.verify_password

    def slow_verify(password, stored):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        release.wait(20)
        with lock:
            active[0] -= 1
        return real_verify(password, stored)

    monkeypatch.setattr(oidc_provider, "verify_password", slow_verify)
    pages = []
    for _ in range(5):
        browser = requests.Session()
        pages.append((browser, idp.authorize(browser, idp.authorize_params())))
    threads = [
        threading.Thread(target=idp.submit_login, args=(b, p, "alice", "wrong password"))
        for b, p in pages
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while active[0] < idp_constants.HASH_WORKERS and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # room for a third check to start, if the pool let it
    assert most[0] == idp_constants.HASH_WORKERS == 2
    release.set()
    for thread in threads:
        thread.join(30)
    assert most[0] == 2  # the queued ones ran after, never beside


# --------------------------------------------------------------------------- security events
# Each refusal driven through the real endpoint; the JSON line (havre.enclave.logs' format, as a
# SIEM reads it) names the event at WARNING with the ids, and holds no password, secret, code or
# token. Control: the successful path beside it logs no security event.


def idp_events(json_log) -> list[dict]:
    return [line for line in json_log.lines() if "event" in line]


def assert_no_secret_logged(json_log, *values: str) -> None:
    raw = json_log.stream.getvalue()
    parsed = json.dumps(json_log.lines(), ensure_ascii=False)
    for value in values:
        assert value and value not in raw and value not in parsed, value


def test_idp_successful_paths_log_no_security_event(idp, json_log):
    """Control: sign-in, exchange, refresh, userinfo, revocation and an admin call succeed and
    leave no security event (nor any secret) in the log."""
    code, params = idp.code_for("alice")
    exchanged = idp.exchange(code, params)
    assert exchanged.status_code == 200
    tokens = exchanged.json()
    rotated = idp.refresh(tokens["refresh_token"])
    assert rotated.status_code == 200
    assert idp.userinfo(rotated.json()["access_token"]).status_code == 200
    revoked = requests.post(
        f"{idp.url}/revoke",
        data={"token": rotated.json()["refresh_token"]},
        auth=("jupyterhub", idp.client_secret),
    )
    assert revoked.status_code == 200
    assert idp.admin("GET", "/users").status_code == 200
    assert any("Signed in alice" in line["message"] for line in json_log.lines())
    assert idp_events(json_log) == []
    assert_no_secret_logged(
        json_log,
        code,
        params["_verifier"],
        tokens["access_token"],
        tokens["refresh_token"],
        rotated.json()["refresh_token"],
        idp.client_secret,
        idp.admin_token,
        USERS["alice"]["password"],
    )


def test_idp_wrong_password_logs_login_failed(idp, json_log):
    response, _ = idp.login("alice", password="a wrong password")
    assert response.status_code == 200 and "Incorrect username or password." in response.text
    response, _ = idp.login("nobody", password="another guess")
    assert response.status_code == 200
    known, unknown = json_log.events("idp.login_failed")
    for line, user in ((known, "alice"), (unknown, "nobody")):
        assert line["level"] == "WARNING" and line["logger"] == "havre.idp"
        assert line["user"] == user
        assert line["client_id"] == "jupyterhub" and line["client_ip"] == "127.0.0.1"
    assert [line["event"] for line in idp_events(json_log)] == ["idp.login_failed"] * 2
    assert_no_secret_logged(json_log, "a wrong password", "another guess")


def test_idp_rate_limit_logs_rate_limited(idp, json_log):
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    for _ in range(5):
        assert idp.submit_login(browser, page, "alice", "guess").status_code == 200
    assert json_log.events("idp.rate_limited") == []  # the failures so far are login_failed
    response = idp.submit_login(browser, page, "alice", USERS["alice"]["password"])
    assert response.status_code == 429
    (limited,) = json_log.events("idp.rate_limited")
    assert limited["level"] == "WARNING"
    assert limited["user"] == "alice" and limited["client_ip"] == "127.0.0.1"
    assert limited["client_id"] == "jupyterhub"
    assert len(json_log.events("idp.login_failed")) == 5
    assert_no_secret_logged(json_log, "guess", USERS["alice"]["password"])


def test_idp_wrong_client_secret_logs_client_auth_failed(idp, json_log):
    code, params = idp.code_for("alice")
    wrong = "w" * 43
    refused = idp.exchange(code, params, secret=wrong)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    (failed,) = json_log.events("idp.client_auth_failed")
    assert failed["level"] == "WARNING"
    assert failed["client_id"] == "jupyterhub" and failed["client_ip"] == "127.0.0.1"
    # the same at the revocation endpoint, with client_secret_post this time
    revoke = requests.post(
        f"{idp.url}/revoke",
        data={"token": "x", "client_id": "jupyterhub", "client_secret": wrong},
    )
    assert revoke.status_code == 401
    assert len(json_log.events("idp.client_auth_failed")) == 2
    assert_no_secret_logged(json_log, wrong, idp.client_secret, code, params["_verifier"])
    # control: the right secret takes the code (not spent by the refused attempt) and logs none
    json_log.clear()
    assert idp.exchange(code, params).status_code == 200
    assert idp_events(json_log) == []


def test_idp_reused_code_or_refresh_token_logs_token_reused(idp, json_log):
    code, params = idp.code_for("alice")
    tokens = idp.exchange(code, params).json()
    rotated = idp.refresh(tokens["refresh_token"])
    assert rotated.status_code == 200
    assert idp_events(json_log) == []  # control: first use of each
    assert idp.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert idp.exchange(code, params).json()["error"] == "invalid_grant"
    reuses = json_log.events("idp.token_reused")
    assert [(r["token"], r["user"], r["client_id"], r["client_ip"]) for r in reuses] == [
        ("refresh token", "alice", "jupyterhub", "127.0.0.1"),
        ("authorization code", "alice", "jupyterhub", "127.0.0.1"),
    ]
    assert all(r["level"] == "WARNING" for r in reuses)
    # the family is revoked: the rotated tokens are dead too
    assert idp.userinfo(rotated.json()["access_token"]).status_code == 401
    assert_no_secret_logged(
        json_log,
        code,
        tokens["access_token"],
        tokens["refresh_token"],
        rotated.json()["refresh_token"],
        idp.client_secret,
    )


def test_idp_pkce_refusals_log_pkce_refused(idp, json_log):
    browser = requests.Session()
    for overrides, reason in (
        ({"code_challenge": None, "code_challenge_method": None}, "no code_challenge"),
        ({"code_challenge_method": "plain"}, "code_challenge_method is not S256"),
    ):
        page = idp.authorize(browser, idp.authorize_params(**overrides))
        assert page.status_code == 302 and "error=invalid_request" in page.headers["Location"]
        (refused,) = json_log.events("idp.pkce_refused")
        assert refused["level"] == "WARNING" and refused["reason"] == reason
        assert refused["client_id"] == "jupyterhub" and refused["client_ip"] == "127.0.0.1"
        json_log.clear()
    # at the token endpoint: a verifier that isn't the one of the challenge
    code, params = idp.code_for("alice")
    wrong_verifier, _ = pkce()
    refused = idp.exchange(code, {**params, "_verifier": wrong_verifier})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    (wrong,) = json_log.events("idp.pkce_refused")
    assert wrong["reason"] == "code_verifier does not match the code_challenge"
    assert wrong["client_id"] == "jupyterhub" and wrong["client_ip"] == "127.0.0.1"
    assert_no_secret_logged(json_log, code, wrong_verifier, params["_verifier"])
    # control: the right verifier, on a fresh code, logs none
    json_log.clear()
    code, params = idp.code_for("alice")
    assert idp.exchange(code, params).status_code == 200
    assert idp_events(json_log) == []


def test_idp_grants_of_another_client_log_grant_refused(provider_factory, tmp_path, json_log):
    idp, other_secret, as_other = _with_another_client(provider_factory, tmp_path)
    tokens = idp.tokens_for("alice")
    code, params = idp.code_for("alice")
    json_log.clear()

    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    assert as_other({**data, "code_verifier": params["_verifier"]}).status_code == 400
    stolen = as_other({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert stolen.status_code == 400
    wrong_redirect = idp.exchange(code, {**params, "redirect_uri": CALLBACK + "x"})
    assert wrong_redirect.json()["error"] == "invalid_grant"
    refusals = json_log.events("idp.grant_refused")
    assert [(r["reason"], r["client_id"], r["user"]) for r in refusals] == [
        ("authorization code of another client", "other-app", "alice"),
        ("refresh token of another client", "other-app", "alice"),
        ("redirect_uri does not match the authorization", "jupyterhub", "alice"),
    ]
    assert all(r["client_ip"] == "127.0.0.1" for r in refusals)
    assert_no_secret_logged(
        json_log, code, tokens["refresh_token"], other_secret, idp.client_secret
    )
    # control: the rightful client's refresh is untouched and logs none
    json_log.clear()
    assert idp.refresh(tokens["refresh_token"]).status_code == 200
    assert idp_events(json_log) == []


def test_idp_admin_call_without_the_admin_token_logs_admin_refused(idp, json_log):
    assert idp.admin("GET", "/users", token="not-the-admin-token").status_code == 403
    assert idp.admin("DELETE", "/users/alice", token="").status_code == 403
    refused = json_log.events("idp.admin_refused")
    assert [(r["method"], r["path"], r["client_ip"]) for r in refused] == [
        ("GET", "/admin/users", "127.0.0.1"),
        ("DELETE", "/admin/users/alice", "127.0.0.1"),
    ]
    assert all(r["level"] == "WARNING" for r in refused)
    assert_no_secret_logged(json_log, "not-the-admin-token", idp.admin_token)
    json_log.clear()
    assert idp.admin("GET", "/users").status_code == 200  # control
    assert idp_events(json_log) == []
