"""Password hashes in the scrypt format of earlier users files (``scrypt$n$r$p$salt$hash``).

The provider still verifies them and replaces each with an Argon2id hash at the next good
sign-in; the tests make them here, since the provider itself never writes one.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

N, R, P = 2**14, 8, 1


def legacy_scrypt_hash(password: str, *, salt: bytes | None = None) -> str:
    """An scrypt hash of ``password`` with the parameters those files used."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"
