"""The embedded provider's admin API: list, add, change and remove users, revoke their tokens.

Only with ``Authorization: Bearer <admin token>``; every change is written to the users file
atomically and the user's sign-ins are revoked when their password or groups change.
"""

from __future__ import annotations

import asyncio
import json

import tornado.httpserver
import tornado.web

from havre.idp.constants import (
    _ADMIN_KEYS,
    _USERNAME_RE,
    USERNAME_PATTERN,
    log,
)
from havre.idp.handlers import JSONHandler
from havre.idp.passwords import hash_password
from havre.idp.tokens import _secret_equal
from havre.idp.users import (
    UserRecord,
    UsersFileError,
    _user_from_json,
    write_users_file,
)


class _AdminHandler(JSONHandler):
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
