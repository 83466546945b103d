"""Per-user passwords for the local demo, until single sign-on (OIDC) is configured.

Passwords are stored as scrypt hashes in a JSON file readable only by the hub (0600);
there is no shared password and no "any password works" mode.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from traitlets import Unicode

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """An scrypt hash of ``password`` as ``scrypt$n$r$p$salt$hash`` (base64 parts)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def write_password_file(path: str | os.PathLike[str], hashes: dict[str, str]) -> None:
    """Write ``{username: hash}`` atomically with mode 0600."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(hashes, f, indent=1, sort_keys=True)
    os.replace(tmp, target)


def read_password_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``{username: hash}`` mapping of a password file."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: expected a JSON object of username -> password hash")
    return data


class DemoPasswordAuthenticator(Authenticator):
    """Log in with a per-user password from a hashed password file (demo enclaves only)."""

    password_file = Unicode(
        config=True,
        help="""JSON file of ``{username: scrypt hash}`` written by ``havre demo-init``.

        Re-read at every login, so rotating a password needs no hub restart.
        """,
    )

    async def authenticate(self, handler: object, data: dict[str, str]) -> str | None:
        username = (data or {}).get("username", "")
        password = (data or {}).get("password", "")
        if not username or not password or not self.password_file:
            return None
        try:
            hashes = read_password_file(self.password_file)
        except (OSError, ValueError) as err:
            self.log.error("Can't read the password file: %s", err)
            return None
        stored = hashes.get(username)
        if stored is None:
            # spend the same time as a real check, so usernames can't be probed by timing
            verify_password(password, hash_password("x", salt=b"0" * 16))
            return None
        return username if verify_password(password, stored) else None
