"""Attacks on the embedded provider's protocol core (oauthlib + Havre's validator), each with
its control: the same probe, made honestly, succeeds.

The provider runs over real HTTP on loopback (the harness of ``test_oidc_provider``); the ID
tokens are checked as a relying party checks them: the key chosen by ``kid`` from the
provider's JWKS, the algorithms from its discovery document, PyJWT verifying.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from havre.idp.config import load_config
from havre.idp.tokens import SigningKey
from tests.unit import test_oidc_provider as harness
from tests.unit.test_oidc_provider import RunningProvider, error_redirect

# the provider harness's fixtures: a real provider per test on a loopback port
seeded = harness.seeded
provider_factory = harness.provider_factory
idp = harness.idp


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def relying_party_check(idp: RunningProvider, id_token: str, audience: str = "jupyterhub") -> dict:
    """What a relying party does with an ID token: key by ``kid`` from the JWKS, only the
    advertised algorithms, issuer, audience and expiry checked."""
    meta = requests.get(f"{idp.url}/.well-known/openid-configuration").json()
    keys = {k["kid"]: k for k in requests.get(meta["jwks_uri"]).json()["keys"]}
    kid = jwt.get_unverified_header(id_token).get("kid")
    if kid not in keys:
        raise jwt.InvalidKeyError(f"no key {kid!r} in the provider's JWKS")
    return jwt.decode(
        id_token,
        key=jwt.PyJWK(keys[kid]).key,
        algorithms=meta["id_token_signing_alg_values_supported"],
        audience=audience,
        issuer=meta["issuer"],
    )


def test_forged_id_tokens_are_refused_by_a_relying_party(idp):
    tokens = idp.tokens_for("olivia")
    genuine = tokens["id_token"]
    claims = relying_party_check(idp, genuine)  # control: the provider's own token passes
    assert claims["sub"] == "olivia" and claims["groups"] == ["output-checkers"]
    header = jwt.get_unverified_header(genuine)
    assert header == {"alg": "RS256", "kid": header["kid"], "typ": "JWT"}

    jwk = requests.get(f"{idp.url}/jwks").json()["keys"][0]
    public_pem = jwt.PyJWK(jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    escalated = {**claims, "sub": "mallory", "groups": ["output-checkers", "hub-admins"]}
    forgeries = {
        "alg none": _jws({"alg": "none", "kid": header["kid"]}, escalated, lambda _: b""),
        "HS256 keyed with the public key": _jws(
            {"alg": "HS256", "kid": header["kid"], "typ": "JWT"},
            escalated,
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        ),
        "claims changed under the signature": ".".join(
            [
                genuine.split(".")[0],
                _b64(json.dumps(escalated).encode()),
                genuine.split(".")[2],
            ]
        ),
        "unknown kid": _jws(
            {"alg": "RS256", "kid": "someone-elses-key"}, escalated, lambda _: b"x" * 256
        ),
    }
    for name, forged in forgeries.items():
        with pytest.raises(jwt.PyJWTError):
            relying_party_check(idp, forged)
            pytest.fail(f"accepted a forged ID token: {name}")
    # the provider's own signature, but for another audience, or after the expiry
    with pytest.raises(jwt.InvalidAudienceError):
        relying_party_check(idp, genuine, audience="other-app")
    key = provider_key(idp)
    stale = key.sign({**claims, "iat": claims["iat"] - 7200, "exp": int(time.time()) - 60})
    relying_party_check(idp, key.sign(claims))  # control: re-signed now, accepted
    with pytest.raises(jwt.ExpiredSignatureError):
        relying_party_check(idp, stale)


def provider_key(idp: RunningProvider) -> SigningKey:
    """The running provider's signing key, read from its state folder."""
    return SigningKey.load_or_create(load_config(idp.config_file).state_dir)


def test_jwts_are_not_access_tokens(idp):
    """The userinfo endpoint knows its opaque access tokens only: no JWT is taken as one, not
    even the provider's own ID token."""
    tokens = idp.tokens_for("alice")
    assert idp.userinfo(tokens["access_token"]).status_code == 200  # control
    claims = relying_party_check(idp, tokens["id_token"])
    for bearer in (
        tokens["id_token"],
        _jws({"alg": "none"}, claims, lambda _: b""),
        provider_key(idp).sign(claims),  # validly signed by the provider's key
    ):
        assert idp.userinfo(bearer).status_code == 401


def test_an_access_token_only_counts_in_the_authorization_header(idp):
    """oauthlib's bearer check also reads ``access_token`` from the query or the body (RFC 6750
    §2.2, §2.3); the provider passes it the header only (a token in a URL ends up in logs)."""
    tokens = idp.tokens_for("alice")
    token = tokens["access_token"]
    assert idp.userinfo(token).status_code == 200  # control
    assert requests.get(f"{idp.url}/userinfo", params={"access_token": token}).status_code == 401
    response = requests.post(f"{idp.url}/userinfo", data={"access_token": token})
    assert response.status_code == 401


def _code(idp: RunningProvider, **overrides) -> tuple[str, dict]:
    return idp.code_for("alice", **overrides)


def test_pkce_downgrades_at_the_token_endpoint(idp):
    """A code bound to an S256 challenge can't be redeemed with the challenge itself (a
    ``plain`` downgrade), nor without a verifier; either attempt spends the code."""
    for verifier in (lambda p: None, lambda p: p["code_challenge"]):
        code, params = _code(idp)
        attempt = idp.exchange(code, {**params, "_verifier": verifier(params)})
        assert attempt.status_code == 400 and attempt.json()["error"] == "invalid_grant"
        assert idp.exchange(code, params).json()["error"] == "invalid_grant"  # spent
    code, params = _code(idp)
    assert idp.exchange(code, params).status_code == 200  # control


def test_code_replay_after_a_good_exchange_ends_that_sign_in_only(idp):
    other = idp.tokens_for("alice")
    code, params = _code(idp)
    first = idp.exchange(code, params).json()
    assert idp.exchange(code, params).json()["error"] == "invalid_grant"
    assert idp.userinfo(first["access_token"]).status_code == 401
    assert idp.userinfo(other["access_token"]).status_code == 200  # another sign-in: untouched


@pytest.mark.parametrize(
    "response_type", ["token", "id_token", "id_token token", "code id_token", "code token"]
)
def test_implicit_and_hybrid_flows_are_refused(idp, response_type):
    """oauthlib's all-in-one server would answer these (tokens in the browser's URL); Havre's
    mounts the code flow only."""
    browser = requests.Session()
    response = idp.authorize(browser, idp.authorize_params(response_type=response_type))
    query = error_redirect(response)
    assert query["error"] == "unsupported_response_type"
    assert "access_token" not in response.headers["Location"]
    assert "id_token" not in parse_qs(urlsplit(response.headers["Location"]).fragment)
    assert idp.authorize(browser, idp.authorize_params()).status_code == 200  # control


@pytest.mark.parametrize(
    "grant",
    [
        {"grant_type": "password", "username": "alice", "password": "alice-correct-horse"},
        {"grant_type": "client_credentials"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "x"},
    ],
    ids=["password", "client_credentials", "device_code"],
)
def test_other_grants_are_refused(idp, grant):
    response = idp.token(grant)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert "access_token" not in response.text


def test_errors_never_travel_in_a_fragment(idp):
    browser = requests.Session()
    response = idp.authorize(browser, idp.authorize_params(response_mode="fragment"))
    location = urlsplit(response.headers["Location"])
    assert location.fragment == ""
    assert parse_qs(location.query)["error"] == ["invalid_request"]


def test_a_refresh_cannot_widen_or_drop_openid(idp):
    tokens = idp.tokens_for("alice", scope="openid groups")

    def refresh(scope: str) -> requests.Response:
        data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        return idp.token({**data, "scope": scope})

    assert refresh("openid groups email").json()["error"] == "invalid_scope"  # wider
    assert refresh("groups").json()["error"] == "invalid_scope"  # without openid
    narrowed = refresh("groups openid")  # control: a narrower or equal scope, reordered
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "openid groups"
