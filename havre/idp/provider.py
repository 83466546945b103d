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

Run it with ``havre-idp --config idp.yaml``; see docs/sysadmin/embedded-oidc-provider.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import ssl
import stat
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import tornado.httpserver
import tornado.web
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from havre.idp.passwords import hash_password, is_password_hash, needs_rehash, verify_password

log = logging.getLogger("havre.idp")

#: Scopes the provider knows; others in a request are ignored (RFC 6749 §3.3).
SUPPORTED_SCOPES = ("openid", "profile", "email", "groups")
#: The user claims each scope releases (``sub`` is always released).
SCOPE_CLAIMS = {
    "profile": ("preferred_username", "name"),
    "email": ("email",),
    "groups": ("groups",),
}
CLAIMS_SUPPORTED = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "preferred_username",
    "name",
    "email",
    "groups",
)

USERNAME_PATTERN = r"[a-z0-9][a-z0-9._@-]{0,63}"
GROUP_PATTERN = r"/?[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}"  # Keycloak-style paths allowed
CLIENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
#: Secrets are at least 32 URL-unreserved characters, so that form-encoding them (as RFC 6749
#: §2.3.1 asks of HTTP Basic client credentials) changes nothing, whatever the client does.
SECRET_PATTERN = r"[A-Za-z0-9._~-]{32,512}"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
_GROUP_RE = re.compile(GROUP_PATTERN)
_CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)
_SECRET_RE = re.compile(SECRET_PATTERN)
_PKCE_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1 (verifier) and §4.2
_S256_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")

CODE_SECONDS = 60
LOGIN_REQUEST_SECONDS = 600
RATE_LIMIT_WINDOW_SECONDS = 60
USED_CODE_MEMORY_SECONDS = 600
MAX_PENDING = 10_000  # login requests, codes and rate-limit keys kept at most, each
MAX_BODY_BYTES = 64 * 1024
KEY_FILE_NAME = "signing-key.pem"
#: sign-ins and their tokens (SHA-256 digests only, never a token in clear), so that a restart
#: of the provider signs nobody out
TOKENS_FILE_NAME = "tokens.json"
TOKENS_SCHEMA = 1
#: password hashes computed at once (each Argon2id check holds 64 MiB)
HASH_WORKERS = 2
BROWSER_COOKIE = "havre_idp_browser"
TEMPLATES = Path(__file__).parent / "templates"

_USER_KEYS = ("password_hash", "groups", "email", "name")
_ADMIN_KEYS = ("groups", "email", "name", "password")


# --------------------------------------------------------------------------- config


class ConfigError(ValueError):
    """An invalid provider config; ``problems`` are ``"key: message"`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(
            f"invalid provider config {source}:\n" + "\n".join(f"  {p}" for p in problems)
        )


@dataclass(frozen=True)
class ClientConfig:
    """A registered relying party (always confidential)."""

    client_id: str
    client_secret_file: Path
    redirect_uris: tuple[str, ...]
    name: str
    post_logout_redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderConfig:
    """The provider's validated config."""

    issuer: str
    state_dir: Path
    users_file: Path
    clients: tuple[ClientConfig, ...]
    admin_token_file: Path | None = None
    access_token_seconds: int = 600
    refresh_token_seconds: int = 86400
    login_failures_per_minute: int = 5
    behind_proxy: bool = False

    def client(self, client_id: str) -> ClientConfig | None:
        """The client registered as ``client_id``, if any."""
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")


def _check_url(value: object, key: str, p: _Problems, *, what: str = "URL") -> str | None:
    if not isinstance(value, str) or not value:
        p.add(key, f"must be an absolute http(s) {what}")
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        p.add(key, f"must be an absolute http(s) {what}, got {value!r}")
        return None
    if parts.fragment or "#" in value:
        p.add(key, f"must not have a fragment: {value!r}")
        return None
    if parts.username is not None or parts.password is not None:
        p.add(key, f"must not contain credentials: {value!r}")
        return None
    return value


def _check_int(
    data: Mapping[str, Any], key: str, default: int, low: int, high: int, p: _Problems
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        p.add(key, f"must be a whole number from {low} to {high}, got {value!r}")
        return default
    return value


def _check_path(value: object, key: str, base_dir: Path, p: _Problems) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        p.add(key, "must be a file system path")
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _check_uri_list(value: object, key: str, p: _Problems, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value):
        p.add(key, "must be a list of URLs" + (" (at least one)" if required else ""))
        return ()
    uris = []
    for i, item in enumerate(value):
        uri = _check_url(item, f"{key}[{i}]", p)
        if uri:
            uris.append(uri)
    return tuple(uris)


def _parse_client(item: object, key: str, base_dir: Path, p: _Problems) -> ClientConfig | None:
    if not isinstance(item, dict):
        p.add(key, "must be a mapping with client_id, client_secret_file and redirect_uris")
        return None
    known = {
        "client_id",
        "client_secret_file",
        "redirect_uris",
        "name",
        "post_logout_redirect_uris",
    }
    for extra in sorted(set(item) - known, key=str):
        p.add(f"{key}.{extra}", "unknown key")
    client_id = item.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID_RE.fullmatch(client_id):
        p.add(f"{key}.client_id", f"required, must match {CLIENT_ID_PATTERN}")
        client_id = None
    secret_file = _check_path(
        item.get("client_secret_file"), f"{key}.client_secret_file", base_dir, p
    )
    redirect_uris = _check_uri_list(
        item.get("redirect_uris"), f"{key}.redirect_uris", p, required=True
    )
    logout_uris = _check_uri_list(
        item.get("post_logout_redirect_uris"), f"{key}.post_logout_redirect_uris", p, required=False
    )
    name = item.get("name", client_id)
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 100):
        p.add(f"{key}.name", "must be a short display name")
        name = client_id
    if client_id is None or secret_file is None or not redirect_uris:
        return None
    return ClientConfig(client_id, secret_file, redirect_uris, name or client_id, logout_uris)


def _check_private_file(path: Path) -> None:
    """Raise ValueError unless ``path`` is a regular file that only its owner can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (create it with `havre-idp --init`)") from None
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise ValueError(
            f"{path}: readable or writable by others (mode {stat.S_IMODE(st.st_mode):o});"
            " run chmod 600"
        )


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The secret in ``path``: a private (0600) file of at least 32 unreserved characters."""
    target = Path(path)
    _check_private_file(target)
    value = target.read_text().strip()
    if not _SECRET_RE.fullmatch(value):
        raise ValueError(
            f"{target}: the secret must be 32 to 512 characters from A-Z a-z 0-9 . _ ~ -"
        )
    return value


def ensure_secret_file(path: str | os.PathLike[str]) -> str:
    """Return the secret in ``path``, first writing a random one (mode 0600) if it is missing."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(target, secrets.token_urlsafe(32) + "\n")
    return read_secret_file(target)


def parse_config(
    data: object, *, source: str = "config", base_dir: Path | None = None, check_files: bool = True
) -> ProviderConfig:
    """Validate a loaded YAML document; raise :class:`ConfigError` listing every problem.

    Relative paths are taken relative to ``base_dir`` (the config file's folder). With
    ``check_files``, the secret files must exist and be private, and the users file, if it
    exists, must be valid.
    """
    p = _Problems()
    base = base_dir or Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping of settings"])
    known = {
        "issuer",
        "state_dir",
        "users_file",
        "admin_token_file",
        "clients",
        "access_token_seconds",
        "refresh_token_seconds",
        "login_failures_per_minute",
        "behind_proxy",
    }
    for extra in sorted(set(data) - known, key=str):
        p.add(str(extra), "unknown key")

    issuer = _check_url(data.get("issuer"), "issuer", p)
    if issuer is not None:
        parts = urlsplit(issuer)
        if parts.query:
            p.add("issuer", "must not have a query string")
        issuer = issuer.rstrip("/")
    state_dir = _check_path(data.get("state_dir"), "state_dir", base, p)
    users_file = _check_path(data.get("users_file"), "users_file", base, p)
    admin_token_file = None
    if data.get("admin_token_file") is not None:
        admin_token_file = _check_path(data.get("admin_token_file"), "admin_token_file", base, p)

    clients: list[ClientConfig] = []
    raw_clients = data.get("clients")
    if not isinstance(raw_clients, list) or not raw_clients:
        p.add("clients", "must be a list of at least one client")
    else:
        for i, item in enumerate(raw_clients):
            client = _parse_client(item, f"clients[{i}]", base, p)
            if client is None:
                continue
            if any(c.client_id == client.client_id for c in clients):
                p.add(f"clients[{i}].client_id", f"duplicate client_id {client.client_id!r}")
                continue
            clients.append(client)

    access = _check_int(data, "access_token_seconds", 600, 1, 86400, p)
    refresh = _check_int(data, "refresh_token_seconds", 86400, 1, 30 * 86400, p)
    failures = _check_int(data, "login_failures_per_minute", 5, 1, 1000, p)
    behind_proxy = data.get("behind_proxy", False)
    if not isinstance(behind_proxy, bool):
        p.add("behind_proxy", "must be true or false")
        behind_proxy = False

    if check_files and not p.items:
        _check_config_files(state_dir, users_file, admin_token_file, clients, p)
    if p.items:
        raise ConfigError(source, p.items)
    assert issuer and state_dir and users_file
    return ProviderConfig(
        issuer=issuer,
        state_dir=state_dir,
        users_file=users_file,
        clients=tuple(clients),
        admin_token_file=admin_token_file,
        access_token_seconds=access,
        refresh_token_seconds=refresh,
        login_failures_per_minute=failures,
        behind_proxy=behind_proxy,
    )


def _check_config_files(
    state_dir: Path | None,
    users_file: Path | None,
    admin_token_file: Path | None,
    clients: list[ClientConfig],
    p: _Problems,
) -> None:
    if state_dir is not None:
        if state_dir.exists() and not state_dir.is_dir():
            p.add("state_dir", f"{state_dir}: not a directory")
        key_file = state_dir / KEY_FILE_NAME
        if key_file.exists():
            try:
                _check_private_file(key_file)
            except ValueError as err:
                p.add("state_dir", str(err))
    if users_file is not None:
        if not users_file.parent.is_dir():
            p.add("users_file", f"{users_file.parent}: no such directory")
        elif users_file.exists():
            try:
                _check_private_file(users_file)
                read_users_file(users_file)
            except ValueError as err:
                p.add("users_file", str(err))
    if admin_token_file is not None:
        try:
            read_secret_file(admin_token_file)
        except ValueError as err:
            p.add("admin_token_file", str(err))
    for i, client in enumerate(clients):
        try:
            read_secret_file(client.client_secret_file)
        except ValueError as err:
            p.add(f"clients[{i}].client_secret_file", str(err))


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> ProviderConfig:
    """Read and validate the YAML config at ``path`` (see :func:`parse_config`)."""
    source = str(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise ConfigError(source, [f"(file): {err.strerror}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError(source, [f"(file): not valid YAML: {err}"]) from None
    return parse_config(
        data, source=source, base_dir=Path(path).resolve().parent, check_files=check_files
    )


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class UserRecord:
    """One user of the users file."""

    username: str
    password_hash: str
    groups: tuple[str, ...] = ()
    email: str = ""
    name: str = ""

    def claims(self, scopes: Iterable[str]) -> dict[str, Any]:
        """The user's claims released by ``scopes`` (``sub`` always)."""
        values: dict[str, Any] = {
            "preferred_username": self.username,
            "name": self.name or self.username,
            "email": self.email,
            "groups": list(self.groups),
        }
        claims: dict[str, Any] = {"sub": self.username}
        for scope in scopes:
            for claim in SCOPE_CLAIMS.get(scope, ()):
                if claim == "email" and not self.email:
                    continue
                claims[claim] = values[claim]
        return claims

    def to_json(self) -> dict[str, Any]:
        """The users-file entry."""
        return {
            "password_hash": self.password_hash,
            "groups": list(self.groups),
            "email": self.email,
            "name": self.name,
        }

    def public(self) -> dict[str, Any]:
        """The entry without the password hash (what the admin API shows)."""
        return {
            "username": self.username,
            "groups": list(self.groups),
            "email": self.email,
            "name": self.name,
        }


def _check_groups(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(g, str) and _GROUP_RE.fullmatch(g) for g in value
    ):
        raise ValueError(f"{where}: groups must be a list of names matching {GROUP_PATTERN}")
    return tuple(dict.fromkeys(value))


def _check_text(value: object, where: str, key: str, limit: int = 200) -> str:
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise ValueError(f"{where}: {key} must be a single line of at most {limit} characters")
    return value


def _user_from_json(username: object, entry: object, where: str) -> UserRecord:
    if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
        raise ValueError(f"{where}: invalid username {username!r}: must match {USERNAME_PATTERN}")
    where = f"{where}: user {username!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object with password_hash, groups, email, name")
    extra = set(entry) - set(_USER_KEYS)
    if extra:
        raise ValueError(f"{where}: unknown keys {sorted(extra)}")
    password_hash = entry.get("password_hash")
    if not is_password_hash(password_hash):
        raise ValueError(
            f"{where}: password_hash must be an Argon2id (or older scrypt) hash (see hash_password)"
        )
    email = _check_text(entry.get("email", ""), where, "email", 254)
    if email and "@" not in email:
        raise ValueError(f"{where}: email must be an address")
    return UserRecord(
        username=username,
        password_hash=password_hash,
        groups=_check_groups(entry.get("groups", []), where),
        email=email,
        name=_check_text(entry.get("name", ""), where, "name"),
    )


def read_users_file(path: str | os.PathLike[str]) -> dict[str, UserRecord]:
    """The users of ``path`` by name; a missing file has no users."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of username -> user")
    return {name: _user_from_json(name, entry, str(path)) for name, entry in data.items()}


def _write_private(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically, mode 0600."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_users_file(
    path: str | os.PathLike[str], users: Mapping[str, Mapping[str, Any] | UserRecord]
) -> None:
    """Write ``{username: {password_hash, groups, email, name}}`` atomically, mode 0600.

    Entries are validated first (a bad one raises ValueError and nothing is written).
    """
    records = {}
    for name, entry in users.items():
        if isinstance(entry, UserRecord):
            entry = entry.to_json()
        records[name] = _user_from_json(name, dict(entry), str(path)).to_json()
    _write_private(Path(path), json.dumps(records, indent=1, sort_keys=True) + "\n")


def seed_users(
    path: str | os.PathLike[str],
    users: Mapping[str, Mapping[str, Any]],
    *,
    replace: bool = False,
) -> list[str]:
    """Create or update users from ``{username: {password, groups, email, name}}``.

    Passwords are given in clear and stored as scrypt hashes; a user whose stored hash already
    matches keeps it, so seeding twice is harmless. Users not in ``users`` are kept unless
    ``replace``. Returns the names that were created.
    """
    existing = read_users_file(path)
    result: dict[str, UserRecord] = {} if replace else dict(existing)
    created = []
    for name, spec in users.items():
        unknown = set(spec) - {"password", "groups", "email", "name"}
        if unknown:
            raise ValueError(f"user {name!r}: unknown keys {sorted(unknown)}")
        password = spec.get("password")
        old = existing.get(name)
        if old is not None and (password is None or verify_password(password, old.password_hash)):
            password_hash = old.password_hash
        elif isinstance(password, str) and password:
            password_hash = hash_password(password)
        else:
            raise ValueError(f"user {name!r}: a password is required for a new user")
        if old is None:
            created.append(name)
        entry = {
            "password_hash": password_hash,
            "groups": list(spec.get("groups", old.groups if old else [])),
            "email": spec.get("email", old.email if old else ""),
            "name": spec.get("name", old.name if old else ""),
        }
        result[name] = _user_from_json(name, entry, str(path))
    write_users_file(path, result)
    return created


def upgrade_password_hash(
    path: str | os.PathLike[str], username: str, old_hash: str, new_hash: str
) -> bool:
    """Replace ``username``'s ``old_hash`` by ``new_hash`` (made from the password that just
    signed in); False, and nothing written, if the user or their hash changed meanwhile."""
    users = read_users_file(path)
    record = users.get(username)
    if record is None or not hmac.compare_digest(record.password_hash, old_hash):
        return False
    users[username] = dataclasses.replace(record, password_hash=new_hash)
    write_users_file(path, users)
    return True


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown users against, so they cost as much as known ones."""
    return hash_password(secrets.token_urlsafe(16))


# --------------------------------------------------------------------------- JWT


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
                log.warning(
                    "Authorization code reused by client %s: revoked tokens of %s",
                    client_id,
                    record.username,
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
            log.warning(
                "Refresh token reused by client %s: revoked the sign-in of %s",
                client_id,
                family.username,
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
            log.warning(
                "Client authentication failed for %r from %s", client_id, self.request.remote_ip
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
            log.warning("Refused an admin request from %s", self.request.remote_ip)
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
        except ValueError as err:
            return self.bad_request(str(err).removeprefix(f"request: user {name!r}: "))
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
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
