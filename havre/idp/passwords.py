"""Password hashing for Havre's embedded identity provider: Argon2id (argon2-cffi).

New hashes are Argon2id in the PHC string format (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``)
with argon2-cffi's RFC 9106 "low memory" profile (64 MiB, 3 passes, 4 lanes), above OWASP's
minimum for Argon2id. Hashes of earlier versions (``scrypt$n$r$p$salt$hash``, N=2^14) still
verify; :func:`needs_rehash` tells the provider to store a new Argon2id hash the next time the
user signs in with the right password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import argon2
import argon2.exceptions
import argon2.profiles

#: The parameters new hashes are made with.
ARGON2_PARAMETERS = argon2.profiles.RFC_9106_LOW_MEMORY
_HASHER = argon2.PasswordHasher.from_parameters(ARGON2_PARAMETERS)
#: Every prefix a stored hash may start with (the users file refuses anything else).
HASH_PREFIXES = ("$argon2id$", "scrypt$")


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (PHC string, random 16-byte salt)."""
    if not isinstance(password, str):
        raise TypeError("the password must be a string")
    return _HASHER.hash(password)


def is_password_hash(stored: object) -> bool:
    """Whether ``stored`` looks like a hash this module can verify (Argon2id or old scrypt)."""
    return isinstance(stored, str) and stored.startswith(HASH_PREFIXES)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (an Argon2id hash, or an old scrypt one).

    A malformed or unknown hash never matches (no exception).
    """
    if not isinstance(password, str) or not isinstance(stored, str):
        return False
    if stored.startswith("$argon2id$"):
        try:
            return _HASHER.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` should be replaced by a fresh hash at the next good sign-in: any
    scrypt hash, or an Argon2id hash made with weaker parameters than :data:`ARGON2_PARAMETERS`."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (argon2.exceptions.InvalidHashError, ValueError):
        return True


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest, validate=True)
        n_, r_, p_ = int(n), int(r), int(p)
        # refuse parameters that would make one sign-in attempt cost gigabytes
        if not (2 <= n_ <= 2**20 and 1 <= r_ <= 32 and 1 <= p_ <= 16 and 16 <= len(expected)):
            return False
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=n_,
            r=r_,
            p=p_,
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
