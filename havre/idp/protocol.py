"""The embedded provider's protocol core: oauthlib's OpenID Connect endpoints and grants, with
Havre's :class:`HavreValidator` (its ``RequestValidator``) deciding each question against the
provider's clients, users and token store.

oauthlib parses and checks the requests, runs the authorization code grant (with PKCE) and the
refresh token grant, builds the token responses and the ID token's protocol claims (``aud``,
``iat``, ``nonce``, ``at_hash``); PyJWT signs it (:meth:`SigningKey.sign`). What oauthlib leaves
to the validator, Havre refuses here:

- PKCE with S256 only (oauthlib also accepts ``plain``): :func:`_havre_authorization_rules`;
- ``state`` required, ``request``/``request_uri`` objects and other response modes refused, any
  repeated parameter refused: :func:`_havre_authorization_rules`;
- an authorization code is good for one attempt, and its replay revokes what it issued:
  :meth:`HavreValidator.validate_code`;
- a rotated refresh token presented again revokes the whole sign-in (reuse detection):
  :meth:`HavreValidator.validate_refresh_token`;
- a redirect URI that differs at the token endpoint is ``invalid_grant`` (oauthlib would answer
  ``invalid_request``): :meth:`HavreValidator.confirm_redirect_uri`;
- no silent sign-in (``prompt=none`` is ``login_required``): every authorization asks for the
  password.

The refusals a SIEM alerts on are security events (``havre.enclave.logs.security_event``, at
WARNING, never with a secret, code or token): ``idp.client_auth_failed``, ``idp.token_reused``,
``idp.pkce_refused`` and ``idp.grant_refused`` here; the handlers add the caller's address
(``client_ip``) through the log context.

Only the two grants Havre offers are mounted (:class:`HavreServer`): oauthlib's all-in-one
``oauthlib.openid.Server`` also carries the implicit, hybrid, password, client-credentials and
device grants, which the provider must answer with ``unsupported_grant_type`` or
``unsupported_response_type``.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any
from urllib.parse import unquote

from oauthlib.common import Request
from oauthlib.oauth2 import BearerToken
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.endpoints import (
    AuthorizationEndpoint,
    ResourceEndpoint,
    RevocationEndpoint,
    TokenEndpoint,
)
from oauthlib.oauth2.rfc6749.grant_types.authorization_code import code_challenge_method_s256
from oauthlib.openid import RequestValidator
from oauthlib.openid.connect.core.endpoints.userinfo import UserInfoEndpoint
from oauthlib.openid.connect.core.grant_types import AuthorizationCodeGrant, RefreshTokenGrant

from havre.enclave.logs import security_event
from havre.idp.constants import (
    _PKCE_RE,
    _S256_CHALLENGE_RE,
    CODE_SECONDS,
    SUPPORTED_SCOPES,
    USED_CODE_MEMORY_SECONDS,
    log,
)
from havre.idp.tokens import Provider, _Code, _secret_equal
from havre.idp.users import UserRecord


def _token(request: Request | None = None) -> str:
    """Codes, access and refresh tokens: 32 random bytes, base64url."""
    return secrets.token_urlsafe(32)


def refusal(error: str, description: str, request: Request) -> errors.OAuth2Error:
    """An OAuth error oauthlib has no class for (``request_not_supported`` ...)."""
    err = errors.OAuth2Error(description=description, request=request)
    err.error = error
    return err


def _pkce_refused(request: Request, reason: str) -> None:
    """Log ``idp.pkce_refused`` (the caller's address comes from the handler's log context)."""
    security_event(
        log,
        "idp.pkce_refused",
        "PKCE refused for client %r: %s",
        request.client_id,
        reason,
        client_id=request.client_id,
        reason=reason,
    )


def _havre_authorization_rules(request: Request) -> dict[str, Any]:
    """Checks of an authorization request beyond oauthlib's (a ``pre_auth`` validator: it runs
    once the client and redirect URI are known good, so its errors go back to the client)."""
    repeated = sorted(set(request.duplicate_params))
    if repeated:
        raise errors.InvalidRequestError(f"repeated parameter: {repeated[0]}", request=request)
    params = dict(request.uri_query_params)
    if "request" in params:
        raise refusal("request_not_supported", "request objects are not supported", request)
    if "request_uri" in params:
        raise refusal("request_uri_not_supported", "request_uri is not supported", request)
    if request.response_mode not in (None, "query"):
        raise errors.InvalidRequestError("Only response_mode=query is supported", request=request)
    if not request.state:
        raise errors.InvalidRequestError("state is required", request=request)
    if len(request.state) > 2048:
        raise errors.InvalidRequestError("state is too long", request=request)
    if request.nonce is not None and len(request.nonce) > 512:
        raise errors.InvalidRequestError("nonce is too long", request=request)
    if not request.code_challenge:
        _pkce_refused(request, "no code_challenge")
        raise errors.InvalidRequestError(
            "PKCE is required: send code_challenge with code_challenge_method=S256",
            request=request,
        )
    if request.code_challenge_method != "S256":  # oauthlib would take "plain" (or no method)
        _pkce_refused(request, "code_challenge_method is not S256")
        raise errors.InvalidRequestError(
            "Only code_challenge_method=S256 is supported", request=request
        )
    if not _S256_CHALLENGE_RE.fullmatch(request.code_challenge):
        _pkce_refused(request, "code_challenge is not an S256 challenge")
        raise errors.InvalidRequestError("code_challenge is not an S256 challenge", request=request)
    return {}


def _user_must_exist(request: Request) -> None:
    """(``post_token``) the signed-in user must still be in the users file."""
    if request.havre_user is None:
        raise errors.InvalidGrantError("The user no longer exists", request=request)


def _refresh_scope_keeps_openid(request: Request) -> None:
    """(``post_token``) a narrowed refresh keeps ``openid`` and the granted scopes' order."""
    granted = request.havre_family.scopes
    if "openid" not in request.scopes:
        raise errors.InvalidScopeError(
            "scope must be a subset of the granted scope", request=request
        )
    request.scopes = [s for s in granted if s in request.scopes]


class HavreValidator(RequestValidator):
    """oauthlib's questions, answered from the provider's config, users file and token store.

    Requests carry Havre's records between the calls of one grant: ``havre_code`` (the
    authorization code's record), ``havre_family`` (the sign-in), ``havre_refresh`` (the
    refresh token presented), ``havre_user`` (the user's current record).
    """

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self.provider = provider

    # -- clients

    def client_authentication_required(self, request: Request) -> bool:
        return True  # every client is confidential

    def authenticate_client(self, request: Request) -> bool:
        """``client_secret_basic`` or ``client_secret_post`` (never both), compared in constant
        time, unknown clients included."""
        header = request.headers.get("Authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return self._client_failed("")
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return self._client_failed("")
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                return self._client_failed("")
            client_id = unquote(raw_id.replace("+", " "))
            secret: str | None = unquote(raw_secret.replace("+", " "))
            if request.client_secret is not None:
                raise errors.InvalidRequestError(
                    "Use only one client authentication method", request=request
                )
            if request.client_id not in (None, client_id):
                raise errors.InvalidRequestError(
                    "client_id does not match the credentials", request=request
                )
        else:
            client_id = request.client_id or ""
            secret = request.client_secret
        expected = self.provider.client_secrets.get(client_id)
        matches = _secret_equal(secret or "", expected or "x" * 43)
        if expected is None or secret is None or not matches:
            return self._client_failed(client_id)
        request.client_id = client_id
        request.client = self.provider.config.client(client_id)
        return True

    def _client_failed(self, client_id: str) -> bool:
        security_event(
            log,
            "idp.client_auth_failed",
            "Client authentication failed for %r",
            client_id,
            client_id=client_id or None,
        )
        return False

    @staticmethod
    def _grant_refused(request: Request, reason: str, user: str) -> None:
        security_event(
            log,
            "idp.grant_refused",
            "Refused a grant of %s to client %r: %s",
            user,
            request.client_id,
            reason,
            client_id=request.client_id,
            user=user,
            reason=reason,
        )

    def validate_client_id(self, client_id: str, request: Request) -> bool:
        request.client = self.provider.config.client(client_id)
        return request.client is not None

    def validate_redirect_uri(self, client_id: str, redirect_uri: str, request: Request) -> bool:
        client = self.provider.config.client(client_id)
        return client is not None and redirect_uri in client.redirect_uris  # exact match only

    def get_default_redirect_uri(self, client_id: str, request: Request) -> None:
        return None  # the redirect URI is always required

    def validate_response_type(
        self, client_id: str, response_type: str, client: Any, request: Request
    ) -> bool:
        if response_type != "code":
            raise errors.UnsupportedResponseTypeError(
                "Only response_type=code is supported", request=request
            )
        return True

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Request
    ) -> bool:
        return grant_type in ("authorization_code", "refresh_token")

    # -- scopes

    def get_default_scopes(self, client_id: str, request: Request) -> list[str]:
        return []

    def validate_scopes(
        self, client_id: str, scopes: list[str], client: Any, request: Request
    ) -> bool:
        """``openid`` is required; scopes the provider doesn't know are dropped (RFC 6749 §3.3)."""
        if "openid" not in (scopes or []):
            request.scopes = scopes
            return False
        request.scopes = [s for s in SUPPORTED_SCOPES if s in scopes]
        return True

    # -- OpenID Connect: every authorization asks for the password

    def validate_silent_login(self, request: Request) -> bool:
        return False

    def validate_silent_authorization(self, request: Request) -> bool:
        return False

    def validate_user_match(
        self, id_token_hint: str | None, scopes: list[str], claims: Any, request: Request
    ) -> bool:
        return True  # no session to match: the password is asked for anyway

    # -- PKCE

    def is_pkce_required(self, client_id: str, request: Request) -> bool:
        return True

    def get_code_challenge(self, code: str, request: Request) -> str:
        verifier = request.code_verifier
        challenge = request.havre_code.code_challenge
        if not verifier or not _PKCE_RE.fullmatch(verifier):
            _pkce_refused(request, "code_verifier is missing or malformed")
            raise errors.InvalidGrantError("code_verifier is missing or malformed", request=request)
        if not code_challenge_method_s256(verifier, challenge):  # oauthlib refuses it next
            _pkce_refused(request, "code_verifier does not match the code_challenge")
        return challenge

    def get_code_challenge_method(self, code: str, request: Request) -> str:
        return "S256"

    # -- authorization codes

    def save_authorization_code(
        self, client_id: str, code: dict[str, str], request: Request
    ) -> None:
        now = time.time()
        self.provider.save_code(
            code["code"],
            _Code(
                client_id=client_id,
                redirect_uri=request.redirect_uri,
                scopes=tuple(request.scopes),
                nonce=request.nonce or None,
                code_challenge=request.code_challenge,
                username=request.user,
                auth_time=int(now),
                expires=now + CODE_SECONDS,
            ),
        )

    def validate_code(self, client_id: str, code: str, client: Any, request: Request) -> bool:
        """One attempt per code, successful or not; a replay revokes what the code issued
        (RFC 6749 §4.1.2). A code presented by another client is left unspent."""
        record = self.provider.code(code)
        if record is None:
            return False
        if record.client_id != client_id:
            self._grant_refused(request, "authorization code of another client", record.username)
            return False
        if record.used:
            if record.family:
                self.provider.revoke_family(record.family)
            security_event(
                log,
                "idp.token_reused",
                "Authorization code reused by client %s: revoked tokens of %s",
                client_id,
                record.username,
                client_id=client_id,
                user=record.username,
                token="authorization code",
            )
            return False
        now = time.time()
        if record.expires <= now:
            self.provider.forget_code(code)
            return False
        record.used = True  # remembered for a while, to detect a replay
        record.expires = now + USED_CODE_MEMORY_SECONDS
        request.havre_code = record
        request.user = record.username
        request.scopes = list(record.scopes)
        request.havre_user = self.provider.user(record.username)
        return True

    def confirm_redirect_uri(
        self, client_id: str, code: str, redirect_uri: str, client: Any, request: Request
    ) -> bool:
        if redirect_uri != request.havre_code.redirect_uri:
            self._grant_refused(
                request,
                "redirect_uri does not match the authorization",
                request.havre_code.username,
            )
            raise errors.InvalidGrantError(
                "redirect_uri does not match the authorization", request=request
            )
        return True

    def get_authorization_code_nonce(
        self, client_id: str, code: str, redirect_uri: str, request: Request
    ) -> str | None:
        return request.havre_code.nonce

    def get_authorization_code_scopes(
        self, client_id: str, code: str, redirect_uri: str, request: Request
    ) -> list[str]:
        record = self.provider.code(code)
        return list(record.scopes) if record else []

    def invalidate_authorization_code(self, client_id: str, code: str, request: Request) -> None:
        pass  # spent by validate_code already, and kept to detect a replay

    # -- refresh tokens

    def validate_refresh_token(self, refresh_token: str, client: Any, request: Request) -> bool:
        """Rotation with reuse detection: a refresh token presented a second time ends the
        whole sign-in; one presented by another client is refused and left alone."""
        found = self.provider.refresh_token(refresh_token)
        if found is None or found[0].expires <= time.time():
            return False
        record, family = found
        if family.client_id != client.client_id:
            self._grant_refused(request, "refresh token of another client", family.username)
            return False
        if record.rotated:
            self.provider.revoke_family(record.family)
            security_event(
                log,
                "idp.token_reused",
                "Refresh token reused by client %s: revoked the sign-in of %s",
                client.client_id,
                family.username,
                client_id=client.client_id,
                user=family.username,
                token="refresh token",
            )
            return False
        user = self.provider.user(family.username)
        if user is None:
            self.provider.revoke_family(record.family)
            return False
        request.havre_family = family
        request.havre_refresh = record
        request.havre_user = user
        request.user = user.username
        return True

    def get_original_scopes(self, refresh_token: str, request: Request) -> list[str]:
        return list(request.havre_family.scopes)

    def is_within_original_scope(
        self, request_scopes: list[str], refresh_token: str, request: Request
    ) -> bool:
        return False

    def rotate_refresh_token(self, request: Request) -> bool:
        return True

    def refresh_id_token(self, request: Request) -> bool:
        return True  # a fresh ID token with the user's current groups

    # -- issuing

    def token_expires_in(self, request: Request) -> int:
        """An access token's lifetime, cut short by the end of its sign-in."""
        now = time.time()
        if request.grant_type == "refresh_token":
            family_expires = request.havre_family.expires
        else:
            family_expires = (
                request.havre_code.auth_time + self.provider.config.refresh_token_seconds
            )
        return max(1, int(self.provider.access_expiry(family_expires, now) - now))

    def get_id_token(self, token: dict[str, Any], token_handler: Any, request: Request) -> None:
        return None  # oauthlib starts the ID token, finalize_id_token completes and signs it

    def finalize_id_token(
        self, id_token: dict[str, Any], token: dict[str, Any], token_handler: Any, request: Request
    ) -> str:
        user: UserRecord = request.havre_user
        if request.grant_type == "refresh_token":
            auth_time = request.havre_family.auth_time
        else:
            auth_time = request.havre_code.auth_time
        now = int(time.time())
        claims = {
            **id_token,
            "iss": self.provider.config.issuer,
            "sub": user.username,
            "iat": now,
            "exp": now + self.provider.config.access_token_seconds,
            "auth_time": auth_time,
        }
        claims.pop("c_hash", None)
        claims.update(user.claims(request.scopes))
        return self.provider.key.sign(claims)

    def save_bearer_token(self, token: dict[str, Any], request: Request) -> str:
        provider = self.provider
        scopes = tuple(request.scopes)
        spent = None
        if request.grant_type == "refresh_token":
            family_id = request.havre_refresh.family
            spent = request.refresh_token
        else:
            code: _Code = request.havre_code
            family_id = provider.new_family(code.username, code.client_id, scopes, code.auth_time)
            code.family = family_id
        provider.add_tokens(
            family_id, token["access_token"], token["refresh_token"], scopes, spent_refresh=spent
        )
        return request.redirect_uri

    # -- access tokens, revocation

    def validate_bearer_token(self, token: str, scopes: list[str], request: Request) -> bool:
        info = self.provider.access_token_info(token or "")
        if info is None:
            return False
        family, granted = info
        user = self.provider.user(family.username)
        if user is None:
            return False
        request.havre_user = user
        request.user = user.username
        request.scopes = list(granted)
        return True

    def get_userinfo_claims(self, request: Request) -> dict[str, Any]:
        return request.havre_user.claims(request.scopes)

    def revoke_token(self, token: str, token_type_hint: str | None, request: Request) -> None:
        self.provider.revoke_token(request.client_id, token)


class HavreServer(
    AuthorizationEndpoint, TokenEndpoint, ResourceEndpoint, RevocationEndpoint, UserInfoEndpoint
):
    """oauthlib's OpenID Connect endpoints with only the authorization code grant (PKCE) and the
    refresh token grant (rotated tokens, a fresh ID token)."""

    def __init__(self, validator: HavreValidator) -> None:
        self.bearer = BearerToken(validator, _token, validator.token_expires_in, _token)
        code = AuthorizationCodeGrant(
            validator, pre_auth=[_havre_authorization_rules], post_token=[_user_must_exist]
        )
        code.register_code_modifier(self._fresh_code)
        refresh = RefreshTokenGrant(
            validator, post_token=[_user_must_exist, _refresh_scope_keeps_openid]
        )
        AuthorizationEndpoint.__init__(
            self,
            default_response_type="code",
            response_types={"code": code},
            default_token_type=self.bearer,
        )
        TokenEndpoint.__init__(
            self,
            default_grant_type="authorization_code",
            grant_types={"authorization_code": code, "refresh_token": refresh},
            default_token_type=self.bearer,
        )
        ResourceEndpoint.__init__(self, default_token="Bearer", token_types={"Bearer": self.bearer})
        RevocationEndpoint.__init__(
            self, validator, supported_token_types=["access_token", "refresh_token"]
        )
        UserInfoEndpoint.__init__(self, validator)

    @staticmethod
    def _fresh_code(grant: dict[str, str], token_handler: Any, request: Request) -> dict[str, str]:
        """Codes of 32 random bytes (oauthlib's are 30 letters and digits)."""
        grant["code"] = _token()
        return grant


def build_server(provider: Provider) -> HavreServer:
    """The oauthlib server of ``provider``."""
    return HavreServer(HavreValidator(provider))
