"""Signed, machine-readable release records (Ed25519).

At install time the egress service gets a key pair (:func:`generate_key`): the private key in
PEM (PKCS#8, mode 0600, never overwritten) and the public key beside it (``<path>.pub``, PEM,
0644) to hand to anyone who needs to check a release. Each release produces a record
(:func:`release_record`: what was released, who voted what, the SDC policy and tool versions in
force, and the audit log's head at that moment) that is signed with :func:`sign_record`::

    {"record": {...},
     "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}}

The signature is over ``egress.audit.chain.canonical_json(record)`` (sorted keys, no
whitespace, UTF-8; the same canonical form as the audit log) and nothing else, so anyone can
check it with any Ed25519 implementation. ``key_id`` is the first 16 hex digits of sha256 of the
raw 32-byte public key. :func:`verify_record` returns ``True`` or ``False`` and never raises:
any change to the record or the signature, a different key, or malformed input gives ``False``.

Because every record carries the audit head (a :class:`~egress.audit.chain.Checkpoint`) and is kept
outside the audit log, signed records double as signed checkpoints: ``python -m egress.audit
verify LOG --checkpoint record.json`` checks the log still holds what it held at that release.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import stat
from collections.abc import Iterable, Mapping
from datetime import datetime
from importlib import metadata
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from egress.audit.chain import TIME_RE, Checkpoint, canonical_json, format_time

__all__ = [
    "ALGORITHM",
    "RECORD_SCHEMA",
    "KeyFileError",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_path",
    "release_record",
    "runtime_versions",
    "sign_record",
    "verify_record",
]

ALGORITHM = "ed25519"
RECORD_SCHEMA = "havre.release-record/1"
_HEX = frozenset("0123456789abcdef")


class KeyFileError(ValueError):
    """A key file is missing, of the wrong kind, or readable by others."""


def public_key_path(private_path: str | os.PathLike[str]) -> str:
    """Where the public key of ``private_path`` lives: the same path plus ``.pub``."""
    return os.fspath(private_path) + ".pub"


def _write_new_file(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` and ``mode`` atomically; never replace an existing file.

    Written to a temporary file (created 0600 first) in the same directory, fsync'd, then
    hard-linked into place: ``link`` fails if ``path`` exists, so a concurrent or repeated
    call can't overwrite, and readers never see a half-written key.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def generate_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Make the service's signing key: ``path`` (private, 0600) and ``path.pub`` (0644).

    Raises ``FileExistsError`` if either file already exists: a key is never overwritten
    (re-running an installer must not silently invalidate every earlier signature). Returns the
    public key.
    """
    path = os.fspath(path)
    pub_path = public_key_path(path)
    for existing in (path, pub_path):
        if os.path.lexists(existing):
            raise FileExistsError(f"{existing} already exists; refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_key = private_key.public_key()
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new_file(path, private_pem, 0o600)
    _write_new_file(pub_path, public_pem, 0o644)
    return public_key


def load_private_key(
    path: str | os.PathLike[str], *, strict_permissions: bool = True
) -> Ed25519PrivateKey:
    """Load the private key; :class:`KeyFileError` if it isn't Ed25519 PEM.

    With ``strict_permissions`` (the default) a key file that group or others can read or write
    is refused, as ``ssh`` does; pass ``False`` for key files on a mount whose modes you don't
    control (e.g. Docker secrets are 0444 by default).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if strict_permissions and stat.S_IMODE(mode) & 0o077:
            raise KeyFileError(
                f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                "run chmod 600 on it"
            )
        data = f.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a public key (PEM); :class:`KeyFileError` if it isn't an Ed25519 public key."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def key_id(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of sha256 of the raw 32-byte public key."""
    if isinstance(public_key, Ed25519PrivateKey):
        public_key = public_key.public_key()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_record(record: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """``{"record": record, "signature": {...}}``, signing ``canonical_json(record)``.

    Raises ``TypeError``/``ValueError`` if the record isn't plain JSON (see
    ``egress.audit.chain.canonical_json``). The returned ``record`` is a copy of the one signed,
    read back from its canonical form: exactly what a verifier will see after a JSON round trip.
    """
    if not isinstance(record, Mapping):
        raise TypeError("a record must be a mapping")
    payload = canonical_json(dict(record))
    signature = private_key.sign(payload)
    return {
        "record": json.loads(payload),
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key_id(private_key),
            "value": base64.b64encode(signature).decode("ascii"),
        },
    }


def verify_record(signed: Any, public_key: Ed25519PublicKey) -> bool:
    """True if ``signed`` is a record signed by ``public_key``'s private key; never raises.

    False on any change to the record or the signature, a signature by another key, an unknown
    algorithm, a ``key_id`` that isn't this key's, or input of the wrong shape.
    """
    try:
        if not isinstance(signed, Mapping) or set(signed) != {"record", "signature"}:
            return False
        record, sig = signed["record"], signed["signature"]
        if not isinstance(record, Mapping) or not isinstance(sig, Mapping):
            return False
        if set(sig) != {"algorithm", "key_id", "value"} or sig["algorithm"] != ALGORITHM:
            return False
        if sig["key_id"] != key_id(public_key):
            return False
        value = sig["value"]
        if not isinstance(value, str):
            return False
        raw = base64.b64decode(value.encode("ascii"), validate=True)
        if len(raw) != 64:
            return False
        public_key.verify(raw, canonical_json(dict(record)))
    except InvalidSignature:
        return False
    except Exception:  # bad input of any kind (wrong types, bad base64, NaN...): not valid
        return False
    return True


# --------------------------------------------------------------------------------------------
# The release record


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _sha256_hex(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
        raise ValueError(f"{what} must be a lowercase sha256 hex digest")
    return value


def runtime_versions() -> dict[str, str]:
    """This process's Havre and Python versions (what :func:`release_record` defaults to)."""
    try:
        havre = metadata.version("havre")
    except metadata.PackageNotFoundError:
        from havre import __version__ as havre
    return {"havre": havre, "python": platform.python_version()}


def release_record(
    *,
    request_id: str,
    project: str,
    author: str,
    released_at: str | datetime,
    files: Iterable[Mapping[str, Any]],
    votes: Iterable[Mapping[str, Any]],
    public_comments: Iterable[Mapping[str, Any]],
    sdc_policy: Mapping[str, Any],
    audit_head: Checkpoint,
    tool_versions: Mapping[str, str] | None = None,
    released_by: str | None = None,
    havre_version: str | None = None,
    python_version: str | None = None,
) -> dict[str, Any]:
    """The machine-readable record of one release, ready for :func:`sign_record`.

    A plain function of its inputs, except that ``havre_version``/``python_version`` default to
    this process's (:func:`runtime_versions`); pass them for a fully reproducible record.

    - ``files``: ``{"path", "sha256", "size"}`` each; sorted by path; paths must be unique.
    - ``votes``: ``{"reviewer", "file", "vote"}`` each, ``file`` one of the released paths;
      sorted by (file, reviewer).
    - ``public_comments``: mappings (e.g. ``{"author", "time", "text"}``), kept in the order
      given; private checker comments must not be passed.
    - ``sdc_policy``: the disclosure-control rules and thresholds in force (any JSON mapping).
    - ``tool_versions``: extra tool versions (e.g. ``{"acro": "1.0.2"}``), merged after
      ``havre``/``python``.
    - ``audit_head``: the audit log's head checkpoint at release time.
    - ``released_at``: an aware datetime or a string in the audit log's time format.

    Raises ``ValueError`` on missing or malformed inputs.
    """
    file_entries = []
    paths: set[str] = set()
    for entry in files:
        if not isinstance(entry, Mapping):
            raise ValueError("each file must be a mapping")
        path = _text(entry.get("path"), "a file's path")
        if path in paths:
            raise ValueError(f"file {path!r} is listed twice")
        paths.add(path)
        size = entry.get("size")
        if type(size) is not int or size < 0:
            raise ValueError(f"file {path!r}: size must be a non-negative integer")
        file_entries.append(
            {
                "path": path,
                "sha256": _sha256_hex(entry.get("sha256"), f"{path!r} sha256"),
                "size": size,
            }
        )
    if not file_entries:
        raise ValueError("a release record needs at least one file")
    file_entries.sort(key=lambda e: e["path"])

    vote_entries = []
    for vote in votes:
        if not isinstance(vote, Mapping):
            raise ValueError("each vote must be a mapping")
        reviewer = _text(vote.get("reviewer"), "a vote's reviewer")
        file = _text(vote.get("file"), "a vote's file")
        if file not in paths:
            raise ValueError(f"a vote by {reviewer!r} is on {file!r}, which is not released")
        vote_entries.append(
            {"file": file, "reviewer": reviewer, "vote": _text(vote.get("vote"), "a vote")}
        )
    vote_entries.sort(key=lambda v: (v["file"], v["reviewer"]))

    comments = []
    for comment in public_comments:
        if not isinstance(comment, Mapping):
            raise ValueError("each public comment must be a mapping")
        comments.append(dict(comment))

    if not isinstance(sdc_policy, Mapping):
        raise ValueError("sdc_policy must be a mapping")
    if not isinstance(audit_head, Checkpoint):
        raise ValueError("audit_head must be an egress.audit.chain.Checkpoint")

    if havre_version is None or python_version is None:
        runtime = runtime_versions()
        havre_version = havre_version or runtime["havre"]
        python_version = python_version or runtime["python"]
    versions = {
        "havre": _text(havre_version, "havre_version"),
        "python": _text(python_version, "python_version"),
    }
    for name, version in (tool_versions or {}).items():
        versions[_text(name, "a tool name")] = _text(version, f"{name!r}'s version")

    if isinstance(released_at, datetime):
        released = format_time(released_at)
    elif isinstance(released_at, str) and TIME_RE.fullmatch(released_at):
        released = released_at
    else:
        raise ValueError("released_at must be a datetime or 'YYYY-MM-DDTHH:MM:SS.ffffffZ'")

    record = {
        "schema": RECORD_SCHEMA,
        "request_id": _text(request_id, "request_id"),
        "project": _text(project, "project"),
        "author": _text(author, "author"),
        "released_at": released,
        "released_by": None if released_by is None else _text(released_by, "released_by"),
        "files": file_entries,
        "votes": vote_entries,
        "public_comments": comments,
        "sdc_policy": dict(sdc_policy),
        "tool_versions": versions,
        "audit_head": audit_head.to_dict(),
    }
    # A deep copy through the canonical form: plain JSON types only (fails now, not at signing
    # time, if anything isn't JSON), and not aliased to the caller's mappings.
    return json.loads(canonical_json(record))
