"""Havre's embedded OpenID Connect provider, for demo enclaves and tests.

Production sites sign in through their own provider (Keycloak or another OIDC provider). For a
local demo enclave, and for the test suite, Havre runs this small but real provider instead, so
that people sign in on a provider's page with their own password, and the hub learns project
membership and the output-checker role from the ``groups`` claim, exactly as with a site
provider.

What it implements: the authorization code flow with PKCE (S256 only), confidential clients
(``client_secret_basic`` or ``client_secret_post``), RS256 ID tokens, userinfo, refresh token
rotation with reuse detection, token revocation (RFC 7009), RP-initiated logout, and a small
admin API (bearer token) to add users and change their groups.

What it deliberately does not have: an "any user works" mode, an unauthenticated API, a debug
console, implicit or hybrid flows, public clients, or a single sign-on session (each
authorization asks for the password). Sign-ins and their tokens are kept in the state folder
(``tokens.json``, 0600, SHA-256 digests of the tokens only), written atomically at every
change: a restart of the provider signs nobody out, and a refresh token rotated just before
it still can't be replayed after it. Pending login forms and authorization codes (valid for
seconds to minutes) live in memory only: a restart in the middle of a sign-in asks for the
password again.

The protocol itself (request checks, the grants, token responses) is oauthlib's OpenID Connect
core with Havre's validator (:mod:`.protocol`); ID tokens are signed with PyJWT.

This module holds what every endpoint shares (headers, errors, the call into oauthlib) and the
endpoints of the protocol's back channel and metadata: discovery, keys, token, userinfo,
revocation and logout. The sign-in page is in :mod:`.authorize`, the admin API in :mod:`.admin`,
the application, server and ``main`` in :mod:`.server`; the rest is in :mod:`.constants`,
:mod:`.config`, :mod:`.users` and :mod:`.tokens`. Run it with ``havre-idp --config idp.yaml``;
see docs/sysadmin/embedded-oidc-provider.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import tornado.httpserver
import tornado.web
from oauthlib.oauth2.rfc6749 import errors

from havre.enclave.logs import log_context
from havre.idp.constants import (
    BROWSER_COOKIE,
    CLAIMS_SUPPORTED,
    STYLESHEET,
    SUPPORTED_SCOPES,
    log,
)
from havre.idp.tokens import OAuthError, Provider

if TYPE_CHECKING:
    from havre.idp.protocol import HavreServer

# --------------------------------------------------------------------------- HTTP


_CSS: list[str] = []


def _stylesheet() -> str:
    """Havre's stylesheet, read once (the provider's own copy: no other service needed)."""
    if not _CSS:
        _CSS.append(STYLESHEET.read_text(encoding="utf-8"))
    return _CSS[0]


def with_params(uri: str, **params: str | None) -> str:
    """``uri`` with ``params`` added to its query string (None values left out)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def single_args(raw: Mapping[str, list[bytes]]) -> tuple[dict[str, str], set[str]]:
    """Decode request arguments; also the names given more than once."""
    args: dict[str, str] = {}
    repeated: set[str] = set()
    for name, values in raw.items():
        if len(values) > 1:
            repeated.add(name)
        try:
            args[name] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise OAuthError("invalid_request", f"{name} is not valid UTF-8") from None
    return args, repeated


class BaseHandler(tornado.web.RequestHandler):
    """Security headers on every response; HTML error pages."""

    json_api = False

    @property
    def provider(self) -> Provider:
        return self.application.settings["havre_idp_provider"]

    def set_default_headers(self) -> None:
        provider = self.provider
        self.csp_nonce = secrets.token_urlsafe(16)
        self.clear_header("Server")
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'nonce-{self.csp_nonce}'; "
            f"form-action {provider.form_action}; frame-ancestors 'none'; base-uri 'none'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")
        if provider.secure_cookies:
            self.set_header("Strict-Transport-Security", "max-age=31536000")

    def prepare(self) -> None:
        self.provider.purge()

    def compute_etag(self) -> None:
        return None  # nothing here is cacheable by validation

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace["csp_nonce"] = self.csp_nonce
        namespace["havre_css"] = _stylesheet()
        return namespace

    def page(self, status: int, title: str, message: str) -> None:
        """Render the plain message page."""
        self.set_status(status)
        self.render("oidc_message.html", title=title, message=message)

    def write_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.json_api:
            error = {
                400: "invalid_request",
                403: "forbidden",
                404: "not_found",
                405: "invalid_request",
            }.get(status_code, "server_error")
            self.write_json({"error": error, "error_description": self._reason}, status_code)
            return
        self.page(status_code, "Error", f"{status_code} {self._reason}")


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class JSONHandler(BaseHandler):
    json_api = True

    def oauth_error(self, err: OAuthError) -> None:
        if err.status == 401:
            self.set_header("WWW-Authenticate", 'Basic realm="havre-idp"')
        self.write_json({"error": err.error, "error_description": err.description}, err.status)

    def form_args(self) -> dict[str, str]:
        """The form body's parameters (RFC 6749: none may be repeated)."""
        args, repeated = single_args(self.request.body_arguments)
        if repeated:
            raise OAuthError("invalid_request", f"repeated parameter: {sorted(repeated)[0]}")
        return args


class DiscoveryHandler(JSONHandler):
    """``GET /.well-known/openid-configuration`` (OpenID Connect Discovery)."""

    def get(self) -> None:
        issuer = self.provider.config.issuer
        self.set_header("Cache-Control", "public, max-age=300")
        self.clear_header("Pragma")
        self.write_json(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "userinfo_endpoint": f"{issuer}/userinfo",
                "jwks_uri": f"{issuer}/jwks",
                "revocation_endpoint": f"{issuer}/revoke",
                "end_session_endpoint": f"{issuer}/logout",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "subject_types_supported": ["public"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "revocation_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "scopes_supported": list(SUPPORTED_SCOPES),
                "claims_supported": list(CLAIMS_SUPPORTED),
                "prompt_values_supported": ["none", "login"],
                "request_parameter_supported": False,
                "request_uri_parameter_supported": False,
                "claims_parameter_supported": False,
                "authorization_response_iss_parameter_supported": True,
            }
        )


class JWKSHandler(JSONHandler):
    """``GET /jwks``: the public signing key."""

    def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        self.clear_header("Pragma")
        self.write_json({"keys": [self.provider.key.jwk()]})


class OAuthHandler(JSONHandler):
    """An endpoint answered by oauthlib (:mod:`havre.idp.protocol`)."""

    @property
    def oauth(self) -> HavreServer:
        return self.application.settings["havre_idp_oauth"]

    def endpoint_uri(self) -> str:
        """This endpoint's address (without the query: oauthlib refuses one on a POST)."""
        return self.provider.config.issuer + self.request.path.removeprefix(
            self.provider.issuer_path
        )

    def form_body(self) -> str:
        """The form body for oauthlib, once :meth:`form_args` checked it."""
        self.form_args()
        return self.request.body.decode("utf-8")

    def respond(self, headers: Mapping[str, str], body: str | None, status: int) -> None:
        """oauthlib's answer; a failed client authentication asks for HTTP Basic."""
        for name, value in headers.items():
            self.set_header(name, value)
        if status == 401:
            self.set_header("WWW-Authenticate", 'Basic realm="havre-idp"')
        self.set_status(status)
        if body:
            self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(body or "")


class TokenHandler(OAuthHandler):
    """``POST /token``: authorization_code and refresh_token grants."""

    def post(self) -> None:
        try:
            body = self.form_body()
            if not self.get_body_argument("grant_type", ""):
                raise OAuthError("invalid_request", "grant_type is required")
            with log_context(client_ip=self.request.remote_ip):
                answer = self.oauth.create_token_response(
                    self.endpoint_uri(), "POST", body, dict(self.request.headers)
                )
        except OAuthError as err:
            return self.oauth_error(err)
        except errors.OAuth2Error as err:
            return self.respond(err.headers, err.json, err.status_code)
        except (OSError, ValueError) as err:
            log.error("Can't read the users file: %s", err)
            return self.write_json({"error": "server_error"}, 500)
        self.respond(*answer)


class UserinfoHandler(OAuthHandler):
    """``GET|POST /userinfo`` with a bearer access token: the user's current claims."""

    def _unauthorized(self, description: str, *, error: bool = True) -> None:
        challenge = 'Bearer realm="havre-idp"'
        if error:
            challenge += f', error="invalid_token", error_description="{description}"'
        self.set_header("WWW-Authenticate", challenge)
        self.write_json({"error": "invalid_token", "error_description": description}, 401)

    def get(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._unauthorized("A bearer access token is required", error=False)
        try:
            # the header only: a token in the query or the body is not accepted
            _headers, body, _status = self.oauth.create_userinfo_response(
                self.endpoint_uri(), "GET", None, {"Authorization": f"Bearer {token}"}
            )
        except errors.OAuth2Error:
            return self._unauthorized("The access token is invalid, expired or revoked")
        except (OSError, ValueError) as err:
            log.error("Can't read the users file: %s", err)
            return self.write_json({"error": "server_error"}, 500)
        self.write_json(json.loads(body))

    post = get


class RevokeHandler(OAuthHandler):
    """``POST /revoke`` (RFC 7009)."""

    def post(self) -> None:
        try:
            body = self.form_body()
        except OAuthError as err:
            return self.oauth_error(err)
        with log_context(client_ip=self.request.remote_ip):
            answer = self.oauth.create_revocation_response(
                self.endpoint_uri(), "POST", body, dict(self.request.headers)
            )
        self.respond(*answer)


class LogoutHandler(BaseHandler):
    """``GET|POST /logout`` (OpenID Connect RP-Initiated Logout)."""

    def get(self) -> None:
        provider = self.provider
        raw = (
            self.request.query_arguments
            if self.request.method == "GET"
            else self.request.body_arguments
        )
        try:
            args, _repeated = single_args(raw)
        except OAuthError as err:
            return self.page(400, "Invalid sign-out request", err.description)
        browser = self.get_cookie(BROWSER_COOKIE)
        if browser:
            for rid in [r for r, req in provider.login_requests.items() if req.browser == browser]:
                del provider.login_requests[rid]
        self.clear_cookie(BROWSER_COOKIE, path=provider.issuer_path or "/")
        target = args.get("post_logout_redirect_uri")
        if target:
            client_id = args.get("client_id")
            clients = [provider.config.client(client_id)] if client_id else provider.config.clients
            if any(c is not None and target in c.post_logout_redirect_uris for c in clients):
                return self.redirect(with_params(target, state=args.get("state")))
            return self.page(
                400,
                "Unknown return address",
                "You are signed out, but the address to return to is not registered "
                "(post_logout_redirect_uri), so you stay here.",
            )
        self.page(
            200,
            "Signed out",
            "You are signed out of the Havre sign-in service. You can close this window.",
        )

    post = get
