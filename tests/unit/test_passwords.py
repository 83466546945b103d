"""Password hashes of the embedded identity provider: Argon2id, with old scrypt hashes still
verifying (and flagged for an upgrade at the next good sign-in)."""

from __future__ import annotations

import argon2
import pytest

from havre.idp.passwords import (
    ARGON2_PARAMETERS,
    hash_password,
    is_password_hash,
    needs_rehash,
    verify_password,
)
from tests.scrypt_hashes import legacy_scrypt_hash


def test_new_hashes_are_argon2id_with_at_least_owasp_parameters():
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$v=19$")
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID
    # OWASP's Argon2id minimum: 19 MiB with 2 passes (or 46 MiB with 1), 1 lane
    assert params.memory_cost >= 19 * 1024 and params.time_cost >= 2
    assert params == ARGON2_PARAMETERS
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batter", stored)
    assert not needs_rehash(stored)


def test_two_hashes_of_one_password_differ_by_salt():
    assert hash_password("same password") != hash_password("same password")


def test_old_scrypt_hashes_still_verify_and_need_a_rehash():
    old = legacy_scrypt_hash("alice-correct-horse")
    assert old.startswith("scrypt$16384$8$1$")
    assert verify_password("alice-correct-horse", old)
    assert not verify_password("alice-correct-hors", old)
    assert needs_rehash(old)


def test_weaker_argon2id_hashes_need_a_rehash():
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    stored = weak.hash("pw-12345678")
    assert verify_password("pw-12345678", stored)
    assert needs_rehash(stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not-a-hash",
        "$argon2id$v=19$m=65536,t=3,p=4$garbage",
        "$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",  # not the id variant
        "scrypt$16384$8$1$!!$!!",
        "scrypt$1$8$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",  # N below range
        "scrypt$1073741824$8$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",  # 1 TiB
        "scrypt$16384$8$1$c2FsdA==",  # a field missing
    ],
)
def test_malformed_hashes_never_match_and_never_raise(stored):
    assert verify_password("anything", stored) is False


def test_only_known_schemes_are_accepted_in_a_users_file():
    assert is_password_hash(hash_password("x" * 8))
    assert is_password_hash(legacy_scrypt_hash("x" * 8))
    for bad in ("", "bcrypt$2b$...", "$argon2i$v=19$...", None, 3):
        assert not is_password_hash(bad)


def test_non_string_password_is_refused_with_a_message():
    with pytest.raises(TypeError, match="must be a string"):
        hash_password(b"bytes")  # type: ignore[arg-type]
    assert verify_password(None, hash_password("x" * 8)) is False  # type: ignore[arg-type]
