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

from havre.enclave.config.problems import ConfigProblemsError, Problems, join_path
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


class UsersFileError(ConfigProblemsError):
    """A users file (or a batch of user entries) with problems; ``problems`` lists each, by its
    dotted path (``users.alice.groups[1]``)."""

    what = "users file"


def _check_groups(p: Problems, value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        p.add(where, "must be a list of group names", value)
        return ()
    for i, group in enumerate(value):
        if not isinstance(group, str) or not _GROUP_RE.fullmatch(group):
            p.add(f"{where}[{i}]", f"invalid group name: must match {GROUP_PATTERN}", group)
    return tuple(dict.fromkeys(value))


def _check_text(p: Problems, value: object, where: str, limit: int = 200) -> str:
    # The value is not echoed: names and addresses are personal data, and logs keep messages.
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        p.add(where, f"must be a single line of at most {limit} characters")
        return ""
    return value


def check_user(p: Problems, username: object, entry: object, path: str) -> UserRecord | None:
    """The user ``username`` of a users file, every problem of it recorded in ``p`` under
    ``path.<username>``; None when it has any.

    A password hash is never echoed in a message (a plaintext password pasted into the file by
    mistake must not end up in a log).
    """
    before = len(p)
    where = join_path(path, username)
    if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
        p.add(where, f"invalid username: must match {USERNAME_PATTERN}", username)
    if not isinstance(entry, Mapping):
        p.add(where, "must be an object with password_hash, groups, email, name")
        return None
    p.unknown_keys(entry, where, _USER_KEYS)
    password_hash = entry.get("password_hash")
    if not is_password_hash(password_hash):
        p.add(
            join_path(where, "password_hash"),
            "must be an Argon2id (or older scrypt) hash (see hash_password)",
        )
    email = _check_text(p, entry.get("email", ""), join_path(where, "email"), 254)
    if email and "@" not in email:
        p.add(join_path(where, "email"), "must be an address")
    groups = _check_groups(p, entry.get("groups", []), join_path(where, "groups"))
    name = _check_text(p, entry.get("name", ""), join_path(where, "name"))
    if len(p) > before:
        return None
    assert isinstance(username, str) and isinstance(password_hash, str)
    return UserRecord(
        username=username, password_hash=password_hash, groups=groups, email=email, name=name
    )


def _user_from_json(username: object, entry: object, source: str) -> UserRecord:
    """The one user ``username``; :class:`UsersFileError` listing every problem of it."""
    p = Problems()
    record = check_user(p, username, entry, "users")
    p.raise_if_any(UsersFileError, source)
    assert record is not None
    return record


def parse_users(data: object, source: str) -> dict[str, UserRecord]:
    """The users of a users file's content (``{username: entry}``) by name.

    Raises :class:`UsersFileError` listing every problem of every user.
    """
    p = Problems()
    if not isinstance(data, Mapping):
        p.add("users", "must be a JSON object of username -> user", data)
        p.raise_if_any(UsersFileError, source)
    users: dict[str, UserRecord] = {}
    for username, entry in data.items():
        record = check_user(p, username, entry, "users")
        if record is not None:
            users[record.username] = record
    p.raise_if_any(UsersFileError, source)
    return users


def read_users_file(path: str | os.PathLike[str]) -> dict[str, UserRecord]:
    """The users of ``path`` by name; a missing file has no users.

    Raises :class:`UsersFileError` listing every problem of the file.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise UsersFileError([f"users: not valid JSON: {err}"], str(path)) from None
    return parse_users(data, str(path))


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

    Entries are validated first (:class:`UsersFileError` lists every problem, and nothing is
    written).
    """
    entries = {
        name: entry.to_json() if isinstance(entry, UserRecord) else entry
        for name, entry in users.items()
    }
    records = {name: record.to_json() for name, record in parse_users(entries, str(path)).items()}
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
    p = Problems()
    for name, spec in users.items():
        where = join_path("users", name)
        p.unknown_keys(spec, where, ("password", "groups", "email", "name"))
        password = spec.get("password")
        old = existing.get(name)
        if old is not None and (password is None or verify_password(password, old.password_hash)):
            password_hash = old.password_hash
        elif isinstance(password, str) and password:
            password_hash = hash_password(password)
        else:
            p.add(join_path(where, "password"), "required for a new user")
            continue
        if old is None:
            created.append(name)
        entry = {
            "password_hash": password_hash,
            "groups": list(spec.get("groups", old.groups if old else [])),
            "email": spec.get("email", old.email if old else ""),
            "name": spec.get("name", old.name if old else ""),
        }
        record = check_user(p, name, entry, "users")
        if record is not None:
            result[name] = record
    p.raise_if_any(UsersFileError, str(path))
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
