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

This module holds the HTTP side (the endpoints, the app, the server, ``main``); the rest is
in :mod:`.constants`, :mod:`.config`, :mod:`.users` and :mod:`.tokens`. Run it with
``havre-idp --config idp.yaml``; see docs/sysadmin/embedded-oidc-provider.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import tornado.httpserver
import tornado.web

from havre.enclave.logs import configure as configure_logs
from havre.enclave.logs import security_event
from havre.idp.config import ConfigError, ProviderConfig, ensure_secret_file, load_config
from havre.idp.constants import (
    _ADMIN_KEYS,
    _S256_CHALLENGE_RE,
    _USERNAME_RE,
    BROWSER_COOKIE,
    CLAIMS_SUPPORTED,
    KEY_FILE_NAME,
    MAX_BODY_BYTES,
    RATE_LIMIT_WINDOW_SECONDS,
    SUPPORTED_SCOPES,
    TEMPLATES,
    USERNAME_PATTERN,
    log,
)
from havre.idp.passwords import hash_password, needs_rehash, verify_password
from havre.idp.tokens import OAuthError, Provider, SigningKey, _LoginRequest, _secret_equal
from havre.idp.users import (
    UserRecord,
    UsersFileError,
    _dummy_hash,
    _user_from_json,
    upgrade_password_hash,
    write_users_file,
)

# --------------------------------------------------------------------------- HTTP


def _with_params(uri: str, **params: str | None) -> str:
    """``uri`` with ``params`` added to its query string (None values left out)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _single_args(raw: Mapping[str, list[bytes]]) -> tuple[dict[str, str], set[str]]:
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


class _BaseHandler(tornado.web.RequestHandler):
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


class _NotFoundHandler(_BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class _JSONHandler(_BaseHandler):
    json_api = True

    def oauth_error(self, err: OAuthError) -> None:
        if err.status == 401:
            self.set_header("WWW-Authenticate", 'Basic realm="havre-idp"')
        self.write_json({"error": err.error, "error_description": err.description}, err.status)

    def form_args(self) -> dict[str, str]:
        """The form body's parameters (RFC 6749: none may be repeated)."""
        args, repeated = _single_args(self.request.body_arguments)
        if repeated:
            raise OAuthError("invalid_request", f"repeated parameter: {sorted(repeated)[0]}")
        return args

    def authenticate_client(self, args: dict[str, str]) -> str:
        """The client_id of a client that proved its secret (basic or post), else OAuthError."""
        header = self.request.headers.get("Authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                raise OAuthError("invalid_client", "Use HTTP Basic client authentication", 401)
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_client", "Malformed client credentials", 401) from None
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                raise OAuthError("invalid_client", "Malformed client credentials", 401)
            client_id = unquote(raw_id.replace("+", " "))
            secret: str | None = unquote(raw_secret.replace("+", " "))
            if "client_secret" in args:
                raise OAuthError("invalid_request", "Use only one client authentication method")
            if args.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", "client_id does not match the credentials")
        else:
            client_id = args.get("client_id", "")
            secret = args.get("client_secret")
        expected = self.provider.client_secrets.get(client_id)
        # compare even for unknown clients, so they cost the same
        matches = _secret_equal(secret or "", expected or "x" * 43)
        if expected is None or secret is None or not matches:
            security_event(
                log,
                "idp.client_auth_failed",
                "Client authentication failed for %r from %s",
                client_id,
                self.request.remote_ip,
                client_id=client_id,
                client_ip=self.request.remote_ip,
            )
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return client_id


class DiscoveryHandler(_JSONHandler):
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


class JWKSHandler(_JSONHandler):
    """``GET /jwks``: the public signing key."""

    def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        self.clear_header("Pragma")
        self.write_json({"keys": [self.provider.key.jwk()]})


class AuthorizeHandler(_BaseHandler):
    """``GET /authorize`` shows the login page; ``POST /authorize`` is the login form."""

    def _browser_id(self) -> str:
        value = self.get_cookie(BROWSER_COOKIE) or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", value):
            value = secrets.token_urlsafe(32)
        self.set_cookie(
            BROWSER_COOKIE,
            value,
            path=self.provider.issuer_path or "/",
            httponly=True,
            secure=self.provider.secure_cookies,
            samesite="Lax",
        )
        return value

    def _render_login(
        self,
        request_id: str,
        request: _LoginRequest,
        *,
        username: str = "",
        error: str = "",
        status: int = 200,
    ) -> None:
        client = self.provider.config.client(request.client_id)
        self.set_status(status)
        self.render(
            "oidc_login.html",
            client_name=client.name if client else request.client_id,
            action=f"{self.provider.issuer_path}/authorize",
            request_id=request_id,
            csrf_token=request.csrf_token,
            username=username,
            error=error,
        )

    def _redirect_error(self, redirect_uri: str, err: OAuthError, state: str | None) -> None:
        self.redirect(
            _with_params(
                redirect_uri,
                error=err.error,
                error_description=err.description,
                state=state,
                iss=self.provider.config.issuer,
            )
        )

    def get(self) -> None:
        config = self.provider.config
        try:
            args, repeated = _single_args(self.request.query_arguments)
        except OAuthError as err:
            return self.page(400, "Invalid sign-in request", err.description)
        client = config.client(args.get("client_id", "")) if "client_id" not in repeated else None
        if client is None:
            return self.page(
                400,
                "Unknown application",
                "The application that sent you here is not registered with this sign-in "
                "service (unknown client_id).",
            )
        redirect_uri = args.get("redirect_uri")
        if "redirect_uri" in repeated or redirect_uri not in client.redirect_uris:
            return self.page(
                400,
                "Invalid return address",
                f"{client.name} asked to return to an address that is not registered for it "
                "(redirect_uri), so this sign-in stops here.",
            )
        state = args.get("state") if "state" not in repeated else None
        try:
            values = self._validate(args, repeated)
        except OAuthError as err:
            return self._redirect_error(redirect_uri, err, state)
        request_id, request = self.provider.new_login_request(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            browser=self._browser_id(),
            **values,
        )
        self._render_login(request_id, request)

    @staticmethod
    def _validate(args: dict[str, str], repeated: set[str]) -> dict[str, Any]:
        if repeated:
            raise OAuthError("invalid_request", f"repeated parameter: {sorted(repeated)[0]}")
        if "request" in args:
            raise OAuthError("request_not_supported", "request objects are not supported")
        if "request_uri" in args:
            raise OAuthError("request_uri_not_supported", "request_uri is not supported")
        response_type = args.get("response_type")
        if not response_type:
            raise OAuthError("invalid_request", "response_type is required")
        if response_type != "code":
            raise OAuthError("unsupported_response_type", "Only response_type=code is supported")
        if args.get("response_mode", "query") != "query":
            raise OAuthError("invalid_request", "Only response_mode=query is supported")
        requested = args.get("scope", "").split()
        if "openid" not in requested:
            raise OAuthError("invalid_scope", "scope must include openid")
        scopes = tuple(s for s in SUPPORTED_SCOPES if s in requested)
        state = args.get("state")
        if not state:
            raise OAuthError("invalid_request", "state is required")
        if len(state) > 2048:
            raise OAuthError("invalid_request", "state is too long")
        nonce = args.get("nonce") or None
        if nonce is not None and len(nonce) > 512:
            raise OAuthError("invalid_request", "nonce is too long")
        challenge = args.get("code_challenge")
        method = args.get("code_challenge_method")
        if not challenge:
            raise OAuthError(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            )
        if method != "S256":
            raise OAuthError("invalid_request", "Only code_challenge_method=S256 is supported")
        if not _S256_CHALLENGE_RE.fullmatch(challenge):
            raise OAuthError("invalid_request", "code_challenge is not an S256 challenge")
        if "none" in args.get("prompt", "").split():
            raise OAuthError("login_required", "This provider always asks for a password")
        return {
            "scopes": scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
        }

    async def post(self) -> None:
        provider = self.provider
        try:
            args, _repeated = _single_args(self.request.body_arguments)
        except OAuthError as err:
            return self.page(400, "Invalid sign-in form", err.description)
        request_id = args.get("request_id", "")
        request = provider.login_request(request_id) if request_id else None
        browser = self.get_cookie(BROWSER_COOKIE) or ""
        csrf = args.get("csrf_token", "")
        if (
            request is None
            or not csrf
            or not _secret_equal(csrf, request.csrf_token)
            or not browser
            or not _secret_equal(browser, request.browser)
        ):
            return self.page(
                400,
                "This sign-in form has expired",
                "Go back to the application and sign in again.",
            )
        username = args.get("username", "").strip().lower()
        password = args.get("password", "")
        if not username or not password:
            return self._render_login(
                request_id,
                request,
                username=username,
                error="Enter your username and password.",
            )
        ip = self.request.remote_ip or "unknown"
        user_key = username[:128]
        now = time.time()
        if provider.user_failures.blocked(user_key, now) or provider.ip_failures.blocked(ip, now):
            security_event(
                log,
                "idp.rate_limited",
                "Sign-in rate limit hit for %r from %s",
                username,
                ip,
                user=username,
                client_ip=ip,
            )
            self.set_header("Retry-After", str(RATE_LIMIT_WINDOW_SECONDS))
            return self._render_login(
                request_id,
                request,
                username=username,
                status=429,
                error="Too many failed sign-in attempts. Wait a minute, then try again.",
            )
        # count the attempt as a failure now, so parallel guesses can't overrun the limit
        provider.user_failures.hit(user_key, now)
        provider.ip_failures.hit(ip, now)
        try:
            user = provider.user(username)
        except (OSError, ValueError) as err:
            log.error("Can't read the users file: %s", err)
            return self.page(
                500,
                "Sign-in is unavailable",
                "The sign-in service is misconfigured; tell your administrator.",
            )
        acceptable = user is not None and len(password) <= 1024
        stored = user.password_hash if user is not None and acceptable else _dummy_hash()
        ok = await asyncio.get_running_loop().run_in_executor(
            self.provider.hash_pool, verify_password, password[:1024], stored
        )
        if not (ok and acceptable):
            security_event(
                log,
                "idp.login_failed",
                "Failed sign-in for %r from %s",
                username,
                ip,
                user=username,
                client_ip=ip,
            )
            return self._render_login(
                request_id,
                request,
                username=username,
                error="Incorrect username or password.",
            )
        provider.user_failures.clear(user_key)
        provider.ip_failures.undo(ip, now)
        if user is not None and needs_rehash(user.password_hash):
            await self._upgrade_hash(user, password)
        request = provider.login_requests.pop(request_id, None)
        if request is None:  # the same form posted twice at once
            return self.page(
                400,
                "This sign-in form has expired",
                "Go back to the application and sign in again.",
            )
        code = provider.issue_code(request, username)
        log.info("Signed in %s to %s from %s", username, request.client_id, ip)
        self.redirect(
            _with_params(
                request.redirect_uri, code=code, state=request.state, iss=provider.config.issuer
            )
        )

    async def _upgrade_hash(self, user: UserRecord, password: str) -> None:
        """Store an Argon2id hash of the password that just signed in in place of an older
        hash (scrypt); a failure is logged and never stops the sign-in."""
        provider = self.provider
        try:
            new_hash = await asyncio.get_running_loop().run_in_executor(
                self.provider.hash_pool, hash_password, password
            )
            # read, compare and write with no await in between: no admin change is lost
            if upgrade_password_hash(
                provider.config.users_file, user.username, user.password_hash, new_hash
            ):
                log.info("Upgraded the password hash of %s to Argon2id", user.username)
        except (OSError, ValueError) as err:
            log.error("Can't upgrade the password hash of %s: %s", user.username, err)


class TokenHandler(_JSONHandler):
    """``POST /token``: authorization_code and refresh_token grants."""

    def post(self) -> None:
        provider = self.provider
        try:
            args = self.form_args()
            client_id = self.authenticate_client(args)
            grant_type = args.get("grant_type")
            if grant_type == "authorization_code":
                code = args.get("code")
                if not code:
                    raise OAuthError("invalid_request", "code is required")
                result = provider.redeem_code(
                    client_id, code, args.get("redirect_uri"), args.get("code_verifier")
                )
            elif grant_type == "refresh_token":
                refresh_token = args.get("refresh_token")
                if not refresh_token:
                    raise OAuthError("invalid_request", "refresh_token is required")
                result = provider.refresh(client_id, refresh_token, args.get("scope"))
            elif not grant_type:
                raise OAuthError("invalid_request", "grant_type is required")
            else:
                raise OAuthError("unsupported_grant_type", f"{grant_type!r} is not supported")
        except OAuthError as err:
            return self.oauth_error(err)
        except (OSError, ValueError) as err:
            log.error("Can't read the users file: %s", err)
            return self.write_json({"error": "server_error"}, 500)
        self.write_json(result)


class UserinfoHandler(_JSONHandler):
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
        info = self.provider.access_token_info(token)
        if info is None:
            return self._unauthorized("The access token is invalid, expired or revoked")
        family, scopes = info
        try:
            user = self.provider.user(family.username)
        except (OSError, ValueError) as err:
            log.error("Can't read the users file: %s", err)
            return self.write_json({"error": "server_error"}, 500)
        if user is None:
            return self._unauthorized("The user no longer exists")
        self.write_json(user.claims(scopes))

    post = get


class RevokeHandler(_JSONHandler):
    """``POST /revoke`` (RFC 7009)."""

    def post(self) -> None:
        try:
            args = self.form_args()
            client_id = self.authenticate_client(args)
            token = args.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
        except OAuthError as err:
            return self.oauth_error(err)
        self.provider.revoke_token(client_id, token)
        self.set_status(200)
        self.finish()


class LogoutHandler(_BaseHandler):
    """``GET|POST /logout`` (OpenID Connect RP-Initiated Logout)."""

    def get(self) -> None:
        provider = self.provider
        raw = (
            self.request.query_arguments
            if self.request.method == "GET"
            else (self.request.body_arguments)
        )
        try:
            args, _repeated = _single_args(raw)
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
                return self.redirect(_with_params(target, state=args.get("state")))
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


class _AdminHandler(_JSONHandler):
    """Admin API: ``Authorization: Bearer <admin token>`` or 403."""

    def prepare(self) -> None:
        super().prepare()
        token = self.provider.admin_token
        if token is None:
            raise tornado.web.HTTPError(404, reason="The admin API is disabled")
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not _secret_equal(given.strip(), token):
            security_event(
                log,
                "idp.admin_refused",
                "Refused an admin request from %s",
                self.request.remote_ip,
                client_ip=self.request.remote_ip,
            )
            self.write_json(
                {"error": "forbidden", "error_description": "A valid admin token is required"},
                403,
            )

    def bad_request(self, description: str, status: int = 400) -> None:
        error = "invalid_request" if status == 400 else "not_found"
        self.write_json({"error": error, "error_description": description}, status)

    def users_or_error(self) -> dict[str, UserRecord] | None:
        try:
            return self.provider.users()
        except (OSError, ValueError) as err:
            log.error("Can't read the users file: %s", err)
            self.write_json({"error": "server_error", "error_description": str(err)}, 500)
            return None

    def checked_name(self, name: str) -> str | None:
        if not _USERNAME_RE.fullmatch(name):
            self.bad_request(f"invalid username: must match {USERNAME_PATTERN}")
            return None
        return name


class AdminUsersHandler(_AdminHandler):
    """``GET /admin/users``: every user, without password hashes."""

    def get(self) -> None:
        users = self.users_or_error()
        if users is not None:
            self.write_json({"users": [u.public() for _, u in sorted(users.items())]})


class AdminUserHandler(_AdminHandler):
    """``GET|PUT|DELETE /admin/users/<name>``."""

    def get(self, name: str) -> None:
        users = self.users_or_error()
        if users is None:
            return
        if name not in users:
            return self.bad_request(f"no user {name!r}", 404)
        self.write_json(users[name].public())

    async def put(self, name: str) -> None:
        if self.checked_name(name) is None:
            return
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            return self.bad_request("the body must be a JSON object")
        if not isinstance(body, dict):
            return self.bad_request("the body must be a JSON object")
        unknown = set(body) - set(_ADMIN_KEYS)
        if unknown:
            return self.bad_request(f"unknown keys {sorted(unknown)}; expected {_ADMIN_KEYS}")
        password = body.get("password")
        if password is not None and (
            not isinstance(password, str) or not 8 <= len(password) <= 1024
        ):
            return self.bad_request("password must be a string of 8 to 1024 characters")
        new_hash = None
        if password is not None:
            new_hash = await asyncio.get_running_loop().run_in_executor(
                self.provider.hash_pool, hash_password, password
            )
        users = self.users_or_error()  # read after the (slow) hash, then write at once
        if users is None:
            return
        old = users.get(name)
        if old is None and new_hash is None:
            return self.bad_request("a password is required for a new user")
        entry = {
            "password_hash": new_hash or (old.password_hash if old else ""),
            "groups": body.get("groups", list(old.groups) if old else []),
            "email": body.get("email", old.email if old else ""),
            "name": body.get("name", old.name if old else ""),
        }
        try:
            record = _user_from_json(name, entry, "request")
        except UsersFileError as err:
            field = f"users.{name}."
            return self.bad_request("; ".join(p.removeprefix(field) for p in err.problems))
        users[name] = record
        write_users_file(self.provider.config.users_file, users)
        log.info(
            "Admin %s user %s (groups %s)",
            "updated" if old else "created",
            name,
            ",".join(record.groups),
        )
        self.write_json(record.public(), 200 if old else 201)

    def delete(self, name: str) -> None:
        users = self.users_or_error()
        if users is None:
            return
        if name not in users:
            return self.bad_request(f"no user {name!r}", 404)
        del users[name]
        write_users_file(self.provider.config.users_file, users)
        revoked = self.provider.revoke_user(name)
        log.info("Admin deleted user %s (%d sign-ins revoked)", name, revoked)
        self.write_json({"deleted": name, "revoked": revoked})


class AdminRevokeHandler(_AdminHandler):
    """``POST /admin/users/<name>/revoke-tokens``: end all of the user's sign-ins."""

    def post(self, name: str) -> None:
        if self.checked_name(name) is None:
            return
        revoked = self.provider.revoke_user(name)
        log.info("Admin revoked the tokens of %s (%d sign-ins)", name, revoked)
        self.write_json({"username": name, "revoked": revoked})


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log without query strings (they may carry codes or tokens)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    log.log(
        level,
        "%d %s %s (%s) %.1fms",
        status,
        request.method,
        request.path,
        request.remote_ip,
        1000 * request.request_time(),
    )


def make_app(config: ProviderConfig) -> tornado.web.Application:
    """The provider as a tornado application (loads or creates the signing key)."""
    provider = Provider(config)
    _dummy_hash()  # computed once now, not during the first sign-in
    base = re.escape(provider.issuer_path)
    name = r"/admin/users/([^/]+)"
    handlers: list[Any] = [
        (base + r"/\.well-known/openid-configuration", DiscoveryHandler),
        (base + r"/jwks", JWKSHandler),
        (base + r"/authorize", AuthorizeHandler),
        (base + r"/token", TokenHandler),
        (base + r"/userinfo", UserinfoHandler),
        (base + r"/revoke", RevokeHandler),
        (base + r"/logout", LogoutHandler),
        (base + r"/admin/users", AdminUsersHandler),
        (base + name, AdminUserHandler),
        (base + name + r"/revoke-tokens", AdminRevokeHandler),
    ]
    return tornado.web.Application(
        handlers,
        template_path=str(TEMPLATES),
        default_handler_class=_NotFoundHandler,
        log_function=_log_request,
        havre_idp_provider=provider,
        debug=False,
        autoreload=False,
        serve_traceback=False,
        xsrf_cookies=False,
    )


def tls_context(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) for a PEM certificate (chain) and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            "--tls-cert/--tls-key",
            [f"can't use the TLS certificate {cert_file} with the key {key_file}: {err}"],
        ) from None
    return context


def make_server(
    app: tornado.web.Application, ssl_context: ssl.SSLContext | None = None
) -> tornado.httpserver.HTTPServer:
    """An HTTP server for ``app`` with the provider's limits (body size, timeouts); HTTPS when
    ``ssl_context`` is given (see :func:`tls_context`)."""
    config: ProviderConfig = app.settings["havre_idp_provider"].config
    return tornado.httpserver.HTTPServer(
        app,
        ssl_options=ssl_context,
        xheaders=config.behind_proxy,
        max_body_size=MAX_BODY_BYTES,
        idle_connection_timeout=60,
        body_timeout=30,
    )


def init_files(config: ProviderConfig) -> list[Path]:
    """Create what is missing: secret files, an empty users file, the signing key."""
    created = []
    secret_files = [c.client_secret_file for c in config.clients]
    if config.admin_token_file:
        secret_files.append(config.admin_token_file)
    for path in secret_files:
        if not path.exists():
            ensure_secret_file(path)
            created.append(path)
    if not config.users_file.exists():
        config.users_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_users_file(config.users_file, {})
        created.append(config.users_file)
    key_file = config.state_dir / KEY_FILE_NAME
    if not key_file.exists():
        SigningKey.load_or_create(config.state_dir)
        created.append(key_file)
    return created


async def _serve(
    config: ProviderConfig,
    address: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    internal_port: int | None = None,
) -> None:
    app = make_app(config)
    server = make_server(app, ssl_context)
    server.listen(port, address)
    servers = [server]
    if internal_port:
        # plain HTTP for relying parties on a private network (the hub's token calls)
        internal = make_server(app)
        internal.listen(internal_port, address)
        servers.append(internal)
        log.info("Back channel (plain HTTP) on %s:%d", address, internal_port)
    log.info(
        "Havre sign-in service %s listening on %s:%d (%s)",
        config.issuer,
        address,
        port,
        "HTTPS" if ssl_context else "plain HTTP",
    )
    if ssl_context is None and config.issuer.startswith("https:") and not config.behind_proxy:
        log.warning("The issuer is https but no --tls-cert was given: serving plain HTTP.")
    if config.issuer.startswith("http:") and urlsplit(config.issuer).hostname not in (
        "127.0.0.1",
        "localhost",
        "::1",
    ):
        log.warning(
            "The issuer is plain http on a network address: passwords and tokens "
            "cross the network in clear. Put a TLS reverse proxy in front."
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("Stopping")
    for each in servers:
        each.stop()
        await each.close_all_connections()


def main(argv: list[str] | None = None) -> int:
    """``havre-idp``: run the embedded OpenID Connect provider."""
    parser = argparse.ArgumentParser(
        prog="havre-idp",
        description="Havre's embedded OpenID Connect provider (demo enclaves and tests).",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("HAVRE_IDP_CONFIG"),
        help="YAML config file (default: $HAVRE_IDP_CONFIG)",
    )
    parser.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    parser.add_argument("--address", default="0.0.0.0", help="address (default 0.0.0.0)")
    parser.add_argument(
        "--init",
        action="store_true",
        help="create missing secret files, users file and signing key, then exit",
    )
    parser.add_argument("--tls-cert", default="", help="PEM certificate (chain): serve HTTPS")
    parser.add_argument("--tls-key", default="", help="the certificate's PEM private key")
    parser.add_argument(
        "--internal-port",
        type=int,
        default=None,
        help="with --tls-cert: also serve plain HTTP on this port (a private network's back "
        "channel; never publish it)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("give --config or set HAVRE_IDP_CONFIG")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("give both --tls-cert and --tls-key, or neither")
    if args.internal_port is not None and not args.tls_cert:
        parser.error("--internal-port is only for a provider that serves HTTPS (--tls-cert)")
    try:
        configure_logs("idp", level=args.log_level.upper())
    except ValueError as err:
        parser.error(str(err))
    try:
        if args.init:
            for path in init_files(load_config(args.config, check_files=False)):
                print(f"created {path}")
        config = load_config(args.config)
        context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except ConfigError as err:
        print(f"havre-idp: refusing to start: {err}", file=sys.stderr)
        return 78  # EX_CONFIG
    if args.init:
        return 0
    asyncio.run(_serve(config, args.address, args.port, context, args.internal_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
