"""The embedded provider's ``/authorize`` endpoint: the sign-in page and its form.

Every authorization asks for the password (no single sign-on session). The request is checked
(client, redirect URI, PKCE S256, scopes) before any page is shown; errors that can't be sent
back to a checked redirect URI are shown on the page, never redirected. Failed sign-ins are
rate-limited per user and per browser, and an unknown user costs the same hash as a known one.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

from havre.idp.constants import (
    _S256_CHALLENGE_RE,
    BROWSER_COOKIE,
    RATE_LIMIT_WINDOW_SECONDS,
    SUPPORTED_SCOPES,
    log,
)
from havre.idp.handlers import BaseHandler, single_args, with_params
from havre.idp.passwords import hash_password, needs_rehash, verify_password
from havre.idp.tokens import OAuthError, _LoginRequest, _secret_equal
from havre.idp.users import (
    UserRecord,
    _dummy_hash,
    upgrade_password_hash,
)


class AuthorizeHandler(BaseHandler):
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
            with_params(
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
            args, repeated = single_args(self.request.query_arguments)
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
            args, _repeated = single_args(self.request.body_arguments)
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
            log.warning("Sign-in rate limit hit for %r from %s", username, ip)
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
            log.info("Failed sign-in for %r from %s", username, ip)
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
            with_params(
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
