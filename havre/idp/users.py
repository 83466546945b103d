"""The embedded provider's users file: records, reading and writing it (0600, atomically),
seeding demo users, password-hash upgrades."""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from havre.idp.constants import (
    _GROUP_RE,
    _USER_KEYS,
    _USERNAME_RE,
    GROUP_PATTERN,
    SCOPE_CLAIMS,
    USERNAME_PATTERN,
)
from havre.idp.passwords import hash_password, is_password_hash, verify_password


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
