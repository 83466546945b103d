"""Unit tests for egress.store.content: content-addressed, verified, never overwritten."""

from __future__ import annotations

import hashlib
import os
import stat
import threading

import pytest

from egress.store.content import ContentNotFound, ContentStore, CorruptContent, sha256_hex


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path / "content")


def test_put_returns_the_sha256_and_lays_out_by_prefix(store, tmp_path):
    digest = store.put(b"table 1\n")
    assert digest == hashlib.sha256(b"table 1\n").hexdigest() == sha256_hex(b"table 1\n")
    assert store.path(digest) == tmp_path / "content" / "sha256" / digest[:2] / digest[2:]
    assert store.exists(digest)
    assert store.get(digest) == b"table 1\n"


def test_blobs_are_0640_and_nothing_temporary_is_left(store):
    digest = store.put(b"x" * 100_000)
    assert stat.S_IMODE(os.stat(store.path(digest)).st_mode) == 0o640
    assert store.temporary_files() == []


def test_put_is_idempotent_and_never_overwrites(store):
    digest = store.put(b"same bytes")
    inode = os.stat(store.path(digest)).st_ino
    assert store.put(b"same bytes") == digest
    assert os.stat(store.path(digest)).st_ino == inode
    assert list(store) == [digest]


def test_empty_content_is_stored_too(store):
    digest = store.put(b"")
    assert store.get(digest) == b""


def test_get_verifies_the_bytes(store):
    digest = store.put(b"approved bytes")
    path = store.path(digest)
    os.chmod(path, 0o600)
    path.write_bytes(b"tampered bytes")
    with pytest.raises(CorruptContent) as info:
        store.get(digest)
    assert info.value.sha256 == digest
    assert info.value.actual == hashlib.sha256(b"tampered bytes").hexdigest()
    assert store.verify_all() == [str(info.value)]


def test_missing_content(store):
    with pytest.raises(ContentNotFound):
        store.get("0" * 64)
    assert not store.exists("0" * 64)


@pytest.mark.parametrize("bad", ["", "abc", "G" * 64, "A" * 64, "../" + "0" * 61, None])
def test_names_must_be_sha256_digests(store, bad):
    with pytest.raises(ValueError):
        store.path(bad)


def test_iteration_and_verify_all(store):
    digests = {store.put(bytes([i]) * (i + 1)) for i in range(20)}
    assert set(store) == digests
    assert store.verify_all() == []


def test_leftover_temporary_files_are_ignored_and_removable(store):
    digest = store.put(b"blob")
    leftover = store.path(digest).parent / ".tmp-deadbeef-1-abcdef"
    leftover.write_bytes(b"half a bl")
    assert list(store) == [digest]
    assert store.temporary_files() == [leftover]
    assert store.remove_temporary_files() == 1
    assert not leftover.exists()


def test_concurrent_puts_of_the_same_content(store):
    data = os.urandom(200_000)
    results = []

    def put():
        results.append(store.put(data))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {sha256_hex(data)}
    assert store.get(results[0]) == data
    assert store.temporary_files() == []
