"""The embedded provider's signing key (RS256 JWTs) and its state: login requests, codes,
access and refresh tokens (rotation, reuse detection), the failure limiter; :class:`Provider`
ties them together."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from havre.enclave.logs import security_event
from havre.idp.config import ProviderConfig, _check_private_file, read_secret_file
from havre.idp.constants import (
    _PKCE_RE,
    CODE_SECONDS,
    HASH_WORKERS,
    KEY_FILE_NAME,
    LOGIN_REQUEST_SECONDS,
    MAX_PENDING,
    RATE_LIMIT_WINDOW_SECONDS,
    TOKENS_FILE_NAME,
    TOKENS_SCHEMA,
    USED_CODE_MEMORY_SECONDS,
    log,
)
from havre.idp.users import UserRecord, _write_private, read_users_file


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


class SigningKey:
    """The provider's RSA key (2048 bits), kept as a 0600 PEM file in the state folder."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self.private_key = private_key
        numbers = private_key.public_key().public_numbers()
        self._public = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
        # RFC 7638 thumbprint
        canonical = json.dumps(self._public, separators=(",", ":"), sort_keys=True)
        self.kid = _b64url(hashlib.sha256(canonical.encode()).digest())

    @classmethod
    def load_or_create(cls, state_dir: str | os.PathLike[str]) -> SigningKey:
        """Load ``state_dir/signing-key.pem``, generating it at the first start."""
        folder = Path(state_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_file = folder / KEY_FILE_NAME
        if not key_file.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = folder / f".{KEY_FILE_NAME}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, key_file)  # atomic, and never replaces an existing key
                log.info("Generated a new signing key in %s", key_file)
            except FileExistsError:
                pass  # another process made it first; use theirs
            finally:
                tmp.unlink(missing_ok=True)
        _check_private_file(key_file)
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey) or loaded.key_size < 2048:
            raise ValueError(f"{key_file}: not an RSA key of at least 2048 bits")
        return cls(loaded)

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK."""
        return {**self._public, "use": "sig", "alg": "RS256", "kid": self.kid}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """``claims`` as a compact RS256 JWS (a JWT)."""
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, dict(claims))
        )
        signature = self.private_key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"


# --------------------------------------------------------------------------- state


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 §4.1.2.1, §5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class _LoginRequest:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    nonce: str | None
    code_challenge: str
    csrf_token: str
    browser: str
    expires: float


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    nonce: str | None
    code_challenge: str
    username: str
    auth_time: int
    expires: float
    used: bool = False
    family: str | None = None


@dataclass
class _Family:
    """The tokens issued from one authorization code (one sign-in)."""

    username: str
    client_id: str
    scopes: tuple[str, ...]
    auth_time: int
    expires: float
    access: set[str] = field(default_factory=set)
    refresh: set[str] = field(default_factory=set)


@dataclass
class _AccessToken:
    family: str
    expires: float
    scopes: tuple[str, ...]


@dataclass
class _RefreshToken:
    family: str
    expires: float
    rotated: bool = False


def _digest(token: str) -> str:
    """Tokens are looked up and kept by their SHA-256, never in clear."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _secret_equal(given: str, expected: str) -> bool:
    """Constant-time comparison (of digests, so lengths don't leak either)."""
    return hmac.compare_digest(_digest(given).encode(), _digest(expected).encode())


def _s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class _FailureLimiter:
    """Sliding-window count of failures per key (a username or a client address)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return hits

    def blocked(self, key: str, now: float) -> bool:
        return len(self._recent(key, now)) >= self.limit

    def hit(self, key: str, now: float) -> None:
        hits = self._recent(key, now)
        if key not in self._hits:
            self._hits[key] = hits
        self._hits.move_to_end(key)
        hits.append(now)
        while len(self._hits) > MAX_PENDING:
            self._hits.popitem(last=False)

    def undo(self, key: str, when: float) -> None:
        hits = self._hits.get(key)
        if hits is not None and when in hits:
            hits.remove(when)

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)

    def purge(self, now: float) -> None:
        for key in list(self._hits):
            self._recent(key, now)


class Provider:
    """The provider's state: sign-ins and tokens persisted in the state folder (see
    :data:`TOKENS_FILE_NAME`), pending logins and codes in memory."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.key = SigningKey.load_or_create(config.state_dir)
        self.client_secrets = {
            c.client_id: read_secret_file(c.client_secret_file) for c in config.clients
        }
        self.admin_token = (
            read_secret_file(config.admin_token_file) if config.admin_token_file else None
        )
        self.issuer_path = urlsplit(config.issuer).path.rstrip("/")
        self.secure_cookies = config.issuer.startswith("https:")
        origins = {"'self'"}
        for client in config.clients:
            for uri in client.redirect_uris:
                parts = urlsplit(uri)
                origins.add(f"{parts.scheme}://{parts.netloc}")
        self.form_action = " ".join(sorted(origins))
        self.login_requests: OrderedDict[str, _LoginRequest] = OrderedDict()
        self.codes: OrderedDict[str, _Code] = OrderedDict()
        self.families: dict[str, _Family] = {}
        self.access_tokens: dict[str, _AccessToken] = {}
        self.refresh_tokens: dict[str, _RefreshToken] = {}
        window = RATE_LIMIT_WINDOW_SECONDS
        self.user_failures = _FailureLimiter(config.login_failures_per_minute, window)
        self.ip_failures = _FailureLimiter(config.login_failures_per_minute, window)
        self._last_purge = 0.0
        self.tokens_file = Path(config.state_dir) / TOKENS_FILE_NAME
        self._load_tokens()
        # Argon2id takes 64 MiB and most of a second per password: at most HASH_WORKERS at
        # once, so a burst of sign-in attempts queues instead of exhausting the memory
        self.hash_pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="havre-idp-hash")

    # -- persistence of sign-ins and tokens

    def _load_tokens(self) -> None:
        """Read the sign-ins a previous run of the provider left (expired ones dropped).

        A file that can't be read or parsed is set aside (renamed ``.corrupt``) and logged:
        everyone signs in again, which is safe, rather than the provider not starting.
        """
        try:
            data = json.loads(self.tokens_file.read_text())
            if data.get("schema") != TOKENS_SCHEMA:
                raise ValueError(f"unknown schema {data.get('schema')!r}")
            now = time.time()
            for fid, fam in data["families"].items():
                if fam["expires"] > now:
                    self.families[fid] = _Family(
                        username=fam["username"],
                        client_id=fam["client_id"],
                        scopes=tuple(fam["scopes"]),
                        auth_time=int(fam["auth_time"]),
                        expires=float(fam["expires"]),
                    )
            for key, rec in data["access"].items():
                family = self.families.get(rec["family"])
                if family is not None and rec["expires"] > now:
                    self.access_tokens[key] = _AccessToken(
                        rec["family"], float(rec["expires"]), tuple(rec["scopes"])
                    )
                    family.access.add(key)
            for key, rec in data["refresh"].items():
                family = self.families.get(rec["family"])
                if family is not None and rec["expires"] > now:
                    self.refresh_tokens[key] = _RefreshToken(
                        rec["family"], float(rec["expires"]), bool(rec["rotated"])
                    )
                    family.refresh.add(key)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.tokens_file.with_name(f"{TOKENS_FILE_NAME}.corrupt")
            log.error(
                "Could not read the sign-ins in %s (%s): set aside as %s; users sign in again",
                self.tokens_file,
                err,
                aside,
            )
            self.families.clear()
            self.access_tokens.clear()
            self.refresh_tokens.clear()
            try:
                os.replace(self.tokens_file, aside)
            except OSError:
                pass
            return
        log.info("Restored %d sign-in(s) from %s", len(self.families), self.tokens_file)

    def _save_tokens(self) -> None:
        """Write the sign-ins and token digests atomically (0600)."""
        data = {
            "schema": TOKENS_SCHEMA,
            "families": {
                fid: {
                    "username": fam.username,
                    "client_id": fam.client_id,
                    "scopes": list(fam.scopes),
                    "auth_time": fam.auth_time,
                    "expires": fam.expires,
                }
                for fid, fam in self.families.items()
            },
            "access": {
                key: {"family": rec.family, "expires": rec.expires, "scopes": list(rec.scopes)}
                for key, rec in self.access_tokens.items()
            },
            "refresh": {
                key: {"family": rec.family, "expires": rec.expires, "rotated": rec.rotated}
                for key, rec in self.refresh_tokens.items()
            },
        }
        _write_private(self.tokens_file, json.dumps(data, separators=(",", ":")))

    # -- users

    def users(self) -> dict[str, UserRecord]:
        """The users file, read now (so changes take effect without a restart)."""
        return read_users_file(self.config.users_file)

    def user(self, username: str) -> UserRecord | None:
        """The current record of ``username``, or None if deleted."""
        return self.users().get(username)

    # -- housekeeping

    def purge(self, now: float | None = None) -> None:
        """Forget expired requests, codes and tokens (at most every 30 seconds)."""
        now = time.time() if now is None else now
        if now - self._last_purge < 30:
            return
        self._last_purge = now
        for rid in [r for r, req in self.login_requests.items() if req.expires <= now]:
            del self.login_requests[rid]
        for code in [c for c, rec in self.codes.items() if rec.expires <= now]:
            del self.codes[code]
        before = len(self.families) + len(self.access_tokens) + len(self.refresh_tokens)
        for fid in [f for f, fam in self.families.items() if fam.expires <= now]:
            self._forget_family(fid)
        for token in [t for t, rec in self.access_tokens.items() if rec.expires <= now]:
            self._drop_access(token)
        for token in [t for t, rec in self.refresh_tokens.items() if rec.expires <= now]:
            self._drop_refresh(token)
        if len(self.families) + len(self.access_tokens) + len(self.refresh_tokens) != before:
            self._save_tokens()
        self.user_failures.purge(now)
        self.ip_failures.purge(now)

    @staticmethod
    def _bounded_insert(store: OrderedDict[str, Any], key: str, value: object) -> None:
        store[key] = value
        while len(store) > MAX_PENDING:
            store.popitem(last=False)

    # -- authorization

    def new_login_request(self, **values: Any) -> tuple[str, _LoginRequest]:
        """Remember a validated authorization request until the login form is posted."""
        request = _LoginRequest(
            csrf_token=secrets.token_urlsafe(32),
            expires=time.time() + LOGIN_REQUEST_SECONDS,
            **values,
        )
        request_id = secrets.token_urlsafe(24)
        self._bounded_insert(self.login_requests, request_id, request)
        return request_id, request

    def login_request(self, request_id: str) -> _LoginRequest | None:
        """The pending authorization request ``request_id``, if still valid."""
        request = self.login_requests.get(request_id)
        if request is None or request.expires <= time.time():
            return None
        return request

    def issue_code(self, request: _LoginRequest, username: str) -> str:
        """A single-use authorization code for ``username``, valid for 60 seconds."""
        code = secrets.token_urlsafe(32)
        now = time.time()
        self._bounded_insert(
            self.codes,
            _digest(code),
            _Code(
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                scopes=request.scopes,
                nonce=request.nonce,
                code_challenge=request.code_challenge,
                username=username,
                auth_time=int(now),
                expires=now + CODE_SECONDS,
            ),
        )
        return code

    # -- tokens

    def redeem_code(
        self, client_id: str, code: str, redirect_uri: str | None, verifier: str | None
    ) -> dict[str, Any]:
        """Exchange an authorization code for tokens (RFC 6749 §4.1.3, RFC 7636 §4.6)."""
        key = _digest(code)
        record = self.codes.get(key)
        now = time.time()
        if record is None or record.client_id != client_id:
            raise OAuthError("invalid_grant", "The authorization code is invalid or expired")
        if record.used:
            # RFC 6749 §4.1.2: a code used twice revokes what was issued from it.
            if record.family:
                self.revoke_family(record.family)
                security_event(
                    log,
                    "idp.token_reused",
                    "Authorization code reused by client %s: revoked tokens of %s",
                    client_id,
                    record.username,
                    user=record.username,
                    client_id=client_id,
                    token="authorization code",
                )
            raise OAuthError("invalid_grant", "The authorization code was already used")
        if record.expires <= now:
            del self.codes[key]
            raise OAuthError("invalid_grant", "The authorization code is invalid or expired")
        # One attempt per code, successful or not; the used code is remembered for a while to
        # detect a replay.
        record.used = True
        record.expires = now + USED_CODE_MEMORY_SECONDS
        if redirect_uri != record.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization")
        if not verifier or not _PKCE_RE.fullmatch(verifier):
            raise OAuthError("invalid_grant", "code_verifier is missing or malformed")
        if not hmac.compare_digest(_s256(verifier), record.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        user = self.user(record.username)
        if user is None:
            raise OAuthError("invalid_grant", "The user no longer exists")
        family_id = secrets.token_urlsafe(16)
        self.families[family_id] = _Family(
            username=user.username,
            client_id=client_id,
            scopes=record.scopes,
            auth_time=record.auth_time,
            expires=record.auth_time + self.config.refresh_token_seconds,
        )
        record.family = family_id
        try:
            return self._issue(family_id, user, nonce=record.nonce)
        finally:
            self._save_tokens()

    def refresh(self, client_id: str, token: str, scope: str | None) -> dict[str, Any]:
        """A rotated refresh token and a new access token (RFC 6749 §6)."""
        key = _digest(token)
        record = self.refresh_tokens.get(key)
        family = self.families.get(record.family) if record else None
        if record is None or family is None or record.expires <= time.time():
            raise OAuthError("invalid_grant", "The refresh token is invalid or expired")
        if family.client_id != client_id:
            raise OAuthError("invalid_grant", "The refresh token was issued to another client")
        if record.rotated:
            self.revoke_family(record.family)
            security_event(
                log,
                "idp.token_reused",
                "Refresh token reused by client %s: revoked the sign-in of %s",
                client_id,
                family.username,
                user=family.username,
                client_id=client_id,
                token="refresh token",
            )
            raise OAuthError("invalid_grant", "The refresh token was already used")
        scopes = family.scopes
        if scope is not None:
            requested = tuple(s for s in scope.split() if s)
            if not set(requested) <= set(family.scopes) or "openid" not in requested:
                raise OAuthError("invalid_scope", "scope must be a subset of the granted scope")
            scopes = tuple(s for s in family.scopes if s in requested)
        user = self.user(family.username)
        if user is None:
            self.revoke_family(record.family)
            raise OAuthError("invalid_grant", "The user no longer exists")
        record.rotated = True
        try:
            return self._issue(record.family, user, scopes=scopes)
        finally:
            self._save_tokens()

    def _issue(
        self,
        family_id: str,
        user: UserRecord,
        *,
        nonce: str | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        family = self.families[family_id]
        scopes = family.scopes if scopes is None else scopes
        now = time.time()
        access_token = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32)
        access_expires = min(now + self.config.access_token_seconds, family.expires)
        self.access_tokens[_digest(access_token)] = _AccessToken(family_id, access_expires, scopes)
        family.access.add(_digest(access_token))
        self.refresh_tokens[_digest(refresh_token)] = _RefreshToken(family_id, family.expires)
        family.refresh.add(_digest(refresh_token))
        claims = {
            "iss": self.config.issuer,
            "sub": user.username,
            "aud": family.client_id,
            "exp": int(now) + self.config.access_token_seconds,
            "iat": int(now),
            "auth_time": family.auth_time,
            "at_hash": _b64url(hashlib.sha256(access_token.encode()).digest()[:16]),
        }
        if nonce:
            claims["nonce"] = nonce
        claims.update(user.claims(scopes))
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": max(1, int(access_expires - now)),
            "refresh_token": refresh_token,
            "id_token": self.key.sign(claims),
            "scope": " ".join(scopes),
        }

    def access_token_info(self, token: str) -> tuple[_Family, tuple[str, ...]] | None:
        """The sign-in and scopes of a valid access token, or None."""
        key = _digest(token)
        record = self.access_tokens.get(key)
        if record is None or record.expires <= time.time():
            return None
        family = self.families.get(record.family)
        if family is None:
            return None
        return family, record.scopes

    def revoke_token(self, client_id: str, token: str) -> None:
        """RFC 7009: revoke an access token, or a refresh token and its whole sign-in."""
        key = _digest(token)
        if key in self.refresh_tokens:
            family = self.families.get(self.refresh_tokens[key].family)
            if family is not None and family.client_id == client_id:
                self.revoke_family(self.refresh_tokens[key].family)
        elif key in self.access_tokens:
            family = self.families.get(self.access_tokens[key].family)
            if family is not None and family.client_id == client_id:
                self._drop_access(key)
                self._save_tokens()

    def revoke_family(self, family_id: str) -> None:
        """Revoke every token issued from one sign-in."""
        if self._forget_family(family_id):
            self._save_tokens()

    def _forget_family(self, family_id: str) -> bool:
        """Drop one sign-in and its tokens from memory; whether there was one."""
        family = self.families.pop(family_id, None)
        if family is None:
            return False
        for key in family.access:
            self.access_tokens.pop(key, None)
        for key in family.refresh:
            self.refresh_tokens.pop(key, None)
        return True

    def revoke_user(self, username: str) -> int:
        """Revoke all of ``username``'s tokens and unused codes; the number of sign-ins ended."""
        families = [f for f, fam in self.families.items() if fam.username == username]
        for fid in families:
            self._forget_family(fid)
        if families:
            self._save_tokens()
        for key in [k for k, c in self.codes.items() if c.username == username and not c.used]:
            del self.codes[key]
        return len(families)

    def _drop_access(self, key: str) -> None:
        record = self.access_tokens.pop(key, None)
        if record and record.family in self.families:
            self.families[record.family].access.discard(key)

    def _drop_refresh(self, key: str) -> None:
        record = self.refresh_tokens.pop(key, None)
        if record and record.family in self.families:
            self.families[record.family].refresh.discard(key)
