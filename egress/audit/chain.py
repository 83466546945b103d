"""The egress service's tamper-evident audit log: the event record and the rule that chains it.

Pure module (standard library only): no web, no database. A store (the service's database
table, :mod:`egress.audit.db_log`, or the JSON-lines file, :mod:`egress.audit.file_log`) keeps the
events; this module says what an event is and how the next one is chained to the head.
:mod:`egress.audit.verify` checks a whole log.

The chain
=========

Every event carries ``prev_hash`` (the ``hash`` of the event before it) and ``hash``::

    hash = sha256(canonical_json(every field except "hash")).hexdigest()

``canonical_json`` is exactly ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False).encode("utf-8")``: sorted keys at every level, no
whitespace, UTF-8, non-ASCII characters written as themselves, no NaN or infinities. Event ``seq``
numbers start at 1 and go up by one. The first event's ``prev_hash`` is the *genesis* hash of the
log, ``sha256("havre-audit-genesis:" + log_id)``, so events of two logs can't be spliced together.

What a hash chain can't show on its own
---------------------------------------

Whoever can write the log can also edit an event and **recompute every hash after it**, or cut
events off the end: the shortened or rewritten log is a valid chain again. Only something kept
outside the log can catch that. That is what a :class:`Checkpoint` is: ``(log_id, seq, hash,
time)`` of the head at some moment, written somewhere the log's writer can't rewrite (a separate
append-only file or host, the signed release records, the operator's e-mail). Verifying with
``expected_head=checkpoint`` fails if the log no longer contains that ``seq`` with that ``hash``:
every event up to the checkpoint is then pinned (changing any of them changes every later hash,
and sha256 has no known collisions), and events after it are chained to it. Nor does a chain
say *who* wrote an event: whoever can write the log can append well-chained events. It protects
what is already there.

Appending
=========

A store keeps the fields, and should also keep each event's line (``AuditEvent.to_line()``):
:func:`egress.audit.verify.verify_lines` checks lines several times faster than rebuilt events
(it hashes the stored bytes instead of re-serialising them). To append, read the head and store
``next_event(head, ...)`` in one transaction, with a unique constraint on ``seq``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FIELDS",
    "GENESIS_PREFIX",
    "AuditChainError",
    "AuditEvent",
    "AuditFormatError",
    "Checkpoint",
    "EventType",
    "IncompleteLineError",
    "MalformedLineError",
    "TIME_RE",
    "canonical_json",
    "check_log_id",
    "format_time",
    "genesis_hash",
    "next_event",
]

GENESIS_PREFIX = "havre-audit-genesis:"

#: Every field of an event, in canonical (sorted) order. ``hash`` covers all the others.
FIELDS = (
    "actor",
    "details",
    "event",
    "file_hashes",
    "hash",
    "object",
    "prev_hash",
    "project",
    "request_id",
    "seq",
    "time",
)
_FIELD_SET = frozenset(FIELDS)

#: The format of event times: UTC, microseconds, "Z".
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


class EventType(enum.StrEnum):
    """What happened. Stored in the log as the member's value (its name)."""

    REQUEST_CREATED = "REQUEST_CREATED"
    FILE_ADDED = "FILE_ADDED"
    FILE_REMOVED = "FILE_REMOVED"
    CONTEXT_EDITED = "CONTEXT_EDITED"
    SUBMITTED = "SUBMITTED"
    FILE_VIEWED = "FILE_VIEWED"
    FILE_PREVIEWED = "FILE_PREVIEWED"
    VOTED = "VOTED"
    VOTE_RESET = "VOTE_RESET"
    COMMENTED = "COMMENTED"
    REVIEW_SUBMITTED = "REVIEW_SUBMITTED"
    RETURNED = "RETURNED"
    RESUBMITTED = "RESUBMITTED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    WITHDRAWN = "WITHDRAWN"
    RELEASED = "RELEASED"
    DOWNLOADED = "DOWNLOADED"
    REVOKED = "REVOKED"
    CONFIG_CHANGED = "CONFIG_CHANGED"
    CHECKS_RUN = "CHECKS_RUN"
    REEXECUTION_REQUESTED = "REEXECUTION_REQUESTED"
    RE_EXECUTED = "RE_EXECUTED"
    LOG_OPENED = "LOG_OPENED"
    # break glass (havre/enclave/break_glass.py), written for the hub by
    # egress/operations/break_glass.py
    BREAK_GLASS_ACTIVATED = "BREAK_GLASS_ACTIVATED"
    BREAK_GLASS_USED = "BREAK_GLASS_USED"
    BREAK_GLASS_ENDED = "BREAK_GLASS_ENDED"


class AuditChainError(ValueError):
    """An event can't be added: bad field values, or the head given is not a sound event."""


class AuditFormatError(ValueError):
    """A stored log can't be read as audit events."""


class MalformedLineError(AuditFormatError):
    """A complete line of a JSON-lines log is not a valid audit event."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no} is not a valid audit event: {reason}")
        self.line_no = line_no
        self.reason = reason


class IncompleteLineError(AuditFormatError):
    """The log's last line has no newline: a write was interrupted (or the file was cut)."""

    def __init__(self, line_no: int, seq: int) -> None:
        super().__init__(f"incomplete last line {line_no}: event {seq} was not completely written")
        self.line_no = line_no
        self.seq = seq


# --------------------------------------------------------------------------------------------
# Canonical form, hashes, times


def canonical_json(obj: Any) -> bytes:
    """The canonical serialisation used for hashes and signatures (see the module docstring)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def genesis_hash(log_id: str) -> str:
    """The ``prev_hash`` of a log's first event: ``sha256("havre-audit-genesis:" + log_id)``."""
    return hashlib.sha256((GENESIS_PREFIX + log_id).encode("utf-8")).hexdigest()


def format_time(when: datetime | None = None) -> str:
    """An aware datetime (default: now) as UTC ISO-8601 with microseconds and ``Z``."""
    if when is None:
        when = datetime.now(UTC)
    elif when.tzinfo is None or when.utcoffset() is None:
        raise AuditChainError("event times must be timezone-aware (UTC); got a naive datetime")
    # the same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ"), in less time (lists format many)
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# --------------------------------------------------------------------------------------------
# Events and checkpoints


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the log. Build new ones with :func:`next_event`.

    ``file_hashes`` and ``details`` are plain dicts for speed; treat them as read-only. An
    ``AuditEvent`` is a dumb record: it is not validated on construction, so a tampered one can
    be represented (that is what :mod:`egress.audit.verify` is for).
    """

    seq: int
    time: str
    actor: str
    event: str
    project: str | None
    request_id: str | None
    object: str | None
    file_hashes: Mapping[str, str]
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self, *, include_hash: bool = True) -> dict[str, Any]:
        """The event as a JSON-able dict (``file_hashes``/``details`` are not copied)."""
        data = {
            "actor": self.actor,
            "details": self.details,
            "event": self.event,
            "file_hashes": self.file_hashes,
            "object": self.object,
            "prev_hash": self.prev_hash,
            "project": self.project,
            "request_id": self.request_id,
            "seq": self.seq,
            "time": self.time,
        }
        if include_hash:
            data["hash"] = self.hash
        return data

    def canonical(self) -> bytes:
        """The canonical bytes the hash covers (every field except ``hash``)."""
        return canonical_json(self.to_dict(include_hash=False))

    def compute_hash(self) -> str:
        """What ``hash`` should be for the event's current content."""
        return hashlib.sha256(self.canonical()).hexdigest()

    def to_line(self) -> bytes:
        """The event as one JSON-lines line: canonical JSON including ``hash``, then ``\\n``."""
        return canonical_json(self.to_dict()) + b"\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Read an event back; raises :class:`AuditFormatError` on a wrong shape or type."""
        if not isinstance(data, Mapping):
            raise AuditFormatError("an audit event must be a JSON object")
        if data.keys() != _FIELD_SET:
            keys = set(data)
            missing = sorted(_FIELD_SET - keys)
            extra = sorted(keys - _FIELD_SET)
            raise AuditFormatError(f"wrong fields (missing {missing}, unexpected {extra})")
        for name in ("time", "actor", "event", "prev_hash", "hash"):
            if not isinstance(data[name], str):
                raise AuditFormatError(f"{name} must be a string")
        for name in ("project", "request_id", "object"):
            if data[name] is not None and not isinstance(data[name], str):
                raise AuditFormatError(f"{name} must be a string or null")
        if type(data["seq"]) is not int:
            raise AuditFormatError("seq must be an integer")
        for name in ("file_hashes", "details"):
            if not isinstance(data[name], Mapping):
                raise AuditFormatError(f"{name} must be an object")
        return cls(**{name: data[name] for name in FIELDS})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of a log at some moment, to be kept *outside* the log.

    ``time`` is the time of the event at ``seq`` (empty for ``seq`` 0, the empty log, whose
    ``hash`` is the genesis hash).
    """

    log_id: str
    seq: int
    hash: str
    time: str

    @classmethod
    def of(cls, event: AuditEvent, log_id: str) -> Checkpoint:
        return cls(log_id=log_id, seq=event.seq, hash=event.hash, time=event.time)

    @classmethod
    def genesis(cls, log_id: str) -> Checkpoint:
        return cls(log_id=log_id, seq=0, hash=genesis_hash(log_id), time="")

    def to_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, "log_id": self.log_id, "seq": self.seq, "time": self.time}

    def to_json(self) -> str:
        return canonical_json(self.to_dict()).decode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Read a checkpoint back; raises ``ValueError`` on a wrong shape or type."""
        if not isinstance(data, Mapping) or not {"log_id", "seq", "hash"} <= set(data):
            raise ValueError("a checkpoint needs log_id, seq and hash")
        log_id, seq, hash_, time = data["log_id"], data["seq"], data["hash"], data.get("time", "")
        if not isinstance(log_id, str) or not log_id:
            raise ValueError("checkpoint log_id must be a non-empty string")
        if type(seq) is not int or seq < 0:
            raise ValueError("checkpoint seq must be a non-negative integer")
        if not isinstance(hash_, str) or not _HEX64_RE.fullmatch(hash_):
            raise ValueError("checkpoint hash must be 64 lowercase hex digits")
        if not isinstance(time, str):
            raise ValueError("checkpoint time must be a string")
        return cls(log_id=log_id, seq=seq, hash=hash_, time=time)


def check_log_id(log_id: object) -> str:
    if not isinstance(log_id, str) or not log_id or not log_id.isprintable():
        raise AuditChainError("log_id must be a non-empty printable string")
    return log_id


def _check_json_value(value: Any, where: str) -> None:
    """Plain JSON only: str keys, no NaN/infinity, no surrogates, no other Python types."""
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise AuditChainError(f"{where} holds a string that is not valid UTF-8") from None
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditChainError(f"{where} holds a NaN or infinite number")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditChainError(f"{where} has a non-string key {key!r}")
            _check_json_value(key, where)
            _check_json_value(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    raise AuditChainError(f"{where} holds a {type(value).__name__}, which is not JSON")


def _optional_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuditChainError(f"{name} must be a string or None")
    _check_json_value(value, name)
    return value


def next_event(
    head: AuditEvent | None,
    log_id: str,
    *,
    actor: str,
    event: EventType | str,
    project: str | None = None,
    request_id: str | None = None,
    object: str | None = None,
    file_hashes: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
    time: str | datetime | None = None,
) -> AuditEvent:
    """The event that follows ``head`` (``None``: the log is empty) in log ``log_id``.

    Computes ``seq``, ``prev_hash`` and ``hash``; validates the fields. Pure: the storage layer
    reads the head and stores the result in one transaction (so two writers can't both append
    ``seq`` N). ``head`` itself is re-hashed first, and :class:`AuditChainError` is raised if it
    doesn't match its own hash: appending to a tampered head fails closed. ``time`` defaults to
    now (UTC); a given string must already be in the log's format (``format_time``).
    """
    check_log_id(log_id)
    if head is None:
        seq, prev_hash = 1, genesis_hash(log_id)
    else:
        if not isinstance(head, AuditEvent):
            raise AuditChainError("head must be an AuditEvent or None")
        try:
            sound = type(head.seq) is int and head.seq >= 1 and head.compute_hash() == head.hash
        except (TypeError, ValueError):
            sound = False
        if not sound:
            raise AuditChainError(
                f"the head (event {head.seq}) does not match its own hash: the log was altered; "
                "verify it before appending"
            )
        seq, prev_hash = head.seq + 1, head.hash

    if not isinstance(actor, str) or not actor:
        raise AuditChainError("actor must be a non-empty string")
    _check_json_value(actor, "actor")
    try:
        event_name = EventType(event).value
    except ValueError:
        raise AuditChainError(f"unknown event type {event!r}") from None

    if time is None or isinstance(time, datetime):
        time_str = format_time(time)
    elif isinstance(time, str) and TIME_RE.fullmatch(time):
        time_str = time
    else:
        raise AuditChainError(
            f"time must be a datetime or 'YYYY-MM-DDTHH:MM:SS.ffffffZ', got {time!r}"
        )

    hashes: dict[str, str] = {}
    for path, digest in (file_hashes or {}).items():
        if not isinstance(path, str) or not path:
            raise AuditChainError("file_hashes keys must be non-empty paths")
        _check_json_value(path, "file_hashes")
        if not isinstance(digest, str) or not _HEX64_RE.fullmatch(digest):
            raise AuditChainError(f"file_hashes[{path!r}] must be a lowercase sha256 hex digest")
        hashes[path] = digest

    details = {} if details is None else details
    if not isinstance(details, Mapping):
        raise AuditChainError("details must be a mapping")
    _check_json_value(details, "details")
    # A deep copy through the canonical form: what the event holds is exactly what was hashed
    # (tuples become lists, later changes to the caller's dict don't leak in).
    details_copy = json.loads(canonical_json(details))

    draft = AuditEvent(
        seq=seq,
        time=time_str,
        actor=actor,
        event=event_name,
        project=_optional_str(project, "project"),
        request_id=_optional_str(request_id, "request_id"),
        object=_optional_str(object, "object"),
        file_hashes=hashes,
        details=details_copy,
        prev_hash=prev_hash,
        hash="",
    )
    return dataclasses.replace(draft, hash=draft.compute_hash())
