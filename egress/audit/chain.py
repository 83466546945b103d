"""The egress service's tamper-evident audit log: a hash chain of events, plus checkpoints.

Pure module (standard library only): no web, no database. The storage layer (the service's
database table, or :class:`AuditFile` here) keeps the events; this module says what an event is,
how the next one is chained to the head, and how to check a whole log.

How it works
============

Every event carries ``prev_hash`` (the ``hash`` of the event before it) and ``hash``::

    hash = sha256(canonical_json(every field except "hash")).hexdigest()

``canonical_json`` is exactly ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False).encode("utf-8")``: sorted keys at every level, no
whitespace, UTF-8, non-ASCII characters written as themselves, no NaN or infinities. Event ``seq``
numbers start at 1 and go up by one. The first event's ``prev_hash`` is the *genesis* hash of the
log, ``sha256("havre-audit-genesis:" + log_id)``, so events of two logs can't be spliced together.

:func:`verify` (and the faster :func:`verify_file`) reads a log once, in O(1) memory, and reports
the first problem: an edited event (its hash no longer matches), a deleted event (a gap in
``seq``), reordered, duplicated or inserted events, a forged hash (an event edited and re-hashed:
its successor's ``prev_hash`` no longer matches), another log's events (wrong genesis), a
malformed line and an incomplete last line (a crash while writing).

What a hash chain can't show on its own
---------------------------------------

Whoever can write the log can also edit an event and **recompute every hash after it**, or cut
events off the end: the shortened or rewritten log is a valid chain again. Only something kept
outside the log can catch that. That is what a :class:`Checkpoint` is: ``(log_id, seq, hash,
time)`` of the head at some moment, written somewhere the log's writer can't rewrite (a separate
append-only file or host, the signed release records, the operator's e-mail). ``verify(...,
expected_head=checkpoint)`` fails if the log no longer contains that ``seq`` with that ``hash``:
every event up to the checkpoint is then pinned (changing any of them changes every later hash,
and sha256 has no known collisions), and events after it are chained to it. Nor does a chain
say *who* wrote an event: whoever can write the log can append well-chained events. It protects
what is already there.

Stores
======

A store keeps the fields, and should also keep each event's line (``AuditEvent.to_line()``):
:func:`verify_lines` checks lines several times faster than :func:`verify` checks rebuilt
events (it hashes the stored bytes instead of re-serialising them). To append, read the head and
store ``next_event(head, ...)`` in one transaction, with a unique constraint on ``seq``.

Files
=====

:class:`AuditFile` is the simplest real store: one event per line in canonical JSON (including
``hash``), appended with ``O_APPEND`` + ``fsync`` under an exclusive ``flock``. A crash part-way
through a write leaves an incomplete last line; :func:`verify_file` reports it as such, and
:func:`repair_truncated_tail` drops it (never a complete event).

Command line::

    python -m egress.audit verify FILE [--checkpoint FILE ...] [--log-id ID] [--full]
    python -m egress.audit export FILE --format csv|jsonl [--output OUT]
    python -m egress.audit checkpoint FILE          # print the head checkpoint (JSON)
    python -m egress.audit repair FILE              # drop an incomplete last line

``verify`` and ``export`` exit 0 when the log verifies, and 1 with the problem on stderr if not.
"""

from __future__ import annotations

import argparse
import binascii
import csv
import dataclasses
import enum
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

__all__ = [
    "FIELDS",
    "GENESIS_PREFIX",
    "AuditChain",
    "AuditChainError",
    "AuditEvent",
    "AuditFile",
    "AuditFormatError",
    "Checkpoint",
    "EventType",
    "IncompleteLineError",
    "MalformedLineError",
    "RepairResult",
    "TIME_RE",
    "VerifyReport",
    "append_checkpoint",
    "canonical_json",
    "event_hash",
    "format_time",
    "genesis_hash",
    "main",
    "next_event",
    "read_checkpoints",
    "read_jsonl",
    "repair_truncated_tail",
    "verify",
    "verify_file",
    "verify_lines",
    "write_jsonl",
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
# In a canonical line the top-level hash sits between "file_hashes" and "object"; every key
# after it holds a scalar, so the last occurrence of this marker is the top-level one (a '"' inside
# a JSON string is always escaped, so the marker can't occur inside a string).
_HASH_MARKER = b',"hash":"'
_HASH_SEGMENT_LEN = len(_HASH_MARKER) + 64 + 1


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
    # break glass (havre/enclave/break_glass.py): written for the hub by egress/break_glass.py
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


def event_hash(event: AuditEvent | Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of every field of ``event`` except ``hash``."""
    data = event.to_dict() if isinstance(event, AuditEvent) else dict(event)
    data.pop("hash", None)
    return hashlib.sha256(canonical_json(data)).hexdigest()


# --------------------------------------------------------------------------------------------
# Events and checkpoints


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the log. Build new ones with :func:`next_event` (or :class:`AuditChain`).

    ``file_hashes`` and ``details`` are plain dicts for speed; treat them as read-only. An
    ``AuditEvent`` is a dumb record: it is not validated on construction, so a tampered one can
    be represented (that is what :func:`verify` is for).
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


def _check_log_id(log_id: object) -> str:
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
    _check_log_id(log_id)
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


class AuditChain:
    """An in-memory chain: ``append`` builds each event from the last (storage-agnostic).

    Start from ``head`` to continue an existing log. Useful for tests and for building a log in
    memory; a store wraps :func:`next_event` in its own transaction instead.
    """

    def __init__(self, log_id: str, head: AuditEvent | None = None) -> None:
        self.log_id = _check_log_id(log_id)
        self.head = head

    def append(self, *, actor: str, event: EventType | str, **fields: Any) -> AuditEvent:
        self.head = next_event(self.head, self.log_id, actor=actor, event=event, **fields)
        return self.head

    def checkpoint(self) -> Checkpoint:
        if self.head is None:
            return Checkpoint.genesis(self.log_id)
        return Checkpoint.of(self.head, self.log_id)


# --------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify`.

    ``events_checked``: events read (including the one where the problem showed).
    ``first_bad_seq``: the lowest ``seq`` the problem points at: the altered event; the first
    missing event; for a broken link between events N-1 and N, N-1 (the earlier one no longer
    hashes to what its successor recorded: it was edited and re-hashed, unless N was forged); for
    a duplicated ``seq``, that ``seq``; for a rewrite caught by a checkpoint, the event after the
    last checkpoint that still matches (the change is somewhere between that and the failing
    checkpoint); for a truncated tail, the first event that is gone; for an incomplete or
    malformed line, the event that line should hold. ``None`` when ok, or when the problem is
    not in the events (a checkpoint of another log).
    ``head``: when ok, the checkpoint of the last event (keep it somewhere else!); when not, the
    last event vouched for before the problem (or ``None``).
    """

    ok: bool
    events_checked: int
    first_bad_seq: int | None
    problem: str | None
    head: Checkpoint | None
    log_id: str = ""


def _events_range(first: int, last: int) -> str:
    return f"event {first} is" if first == last else f"events {first} to {last} are"


def _at(cp: Checkpoint) -> str:
    return f"the checkpoint of {cp.time}" if cp.time else f"the checkpoint of event {cp.seq}"


class _Checker:
    """The streaming state of a verification: O(1) memory (plus the checkpoints given).

    ``last``/``before_last`` are ``(seq, hash, time)`` of the last two events vouched for.
    """

    __slots__ = (
        "log_id",
        "expected",
        "last_hash",
        "last",
        "before_last",
        "count",
        "pending",
        "next_cp",
        "matched_cp",
        "report",
    )

    def __init__(self, log_id: str, checkpoints: Iterable[Checkpoint]) -> None:
        self.log_id = log_id
        self.expected = 1
        self.last_hash = genesis_hash(log_id)
        genesis = Checkpoint.genesis(log_id)
        self.last: tuple[Any, Any, Any] | None = None
        self.before_last: tuple[Any, Any, Any] | None = None
        self.count = 0
        self.matched_cp: Checkpoint = genesis
        self.report: VerifyReport | None = None
        by_seq: dict[int, Checkpoint] = {}
        for cp in checkpoints:
            if cp.log_id != log_id:
                self._fail(None, f"the checkpoint is for log {cp.log_id!r}, not {log_id!r}.")
                break
            other = by_seq.setdefault(cp.seq, cp)
            if other.hash != cp.hash:
                self._fail(None, f"two checkpoints disagree about event {cp.seq}'s hash.")
                break
        if self.report is None and 0 in by_seq and by_seq.pop(0).hash != self.last_hash:
            self._fail(None, f"the checkpoint of event 0 is not log {log_id!r}'s genesis hash.")
        # Highest seq first, so the next one due is pending[-1].
        self.pending = sorted(by_seq.values(), key=lambda c: c.seq, reverse=True)
        self.next_cp = self.pending[-1].seq if self.pending else -1

    def _cp(self, event: tuple[Any, Any, Any] | None) -> Checkpoint | None:
        return None if event is None else Checkpoint(self.log_id, *event)

    def _fail(self, first_bad: int | None, problem: str, head: Checkpoint | None = None) -> None:
        self.report = VerifyReport(
            ok=False,
            events_checked=self.count,
            first_bad_seq=first_bad,
            problem=problem,
            head=head,
            log_id=self.log_id,
        )

    def feed(self, seq: Any, prev_hash: Any, stored_hash: Any, content_ok: bool, time: Any) -> bool:
        """Check the next event; False (and ``self.report`` set) at the first problem."""
        self.count += 1
        expected = self.expected
        if not content_ok:
            bad = seq if type(seq) is int and seq == expected else expected
            self._fail(
                bad,
                f"event {bad} was altered: its content no longer matches its hash.",
                self._cp(self.last),
            )
            return False
        if seq != expected or type(seq) is not int:
            if type(seq) is int and seq > expected:
                if expected == 1:
                    problem = (
                        f"the log starts at event {seq}, not 1: "
                        f"{_events_range(1, seq - 1)} missing (deleted)."
                    )
                else:
                    problem = (
                        f"{_events_range(expected, seq - 1)} missing: event {seq} follows "
                        f"event {expected - 1}, so events were deleted or reordered."
                    )
                self._fail(expected, problem, self._cp(self.last))
            else:
                bad = seq if type(seq) is int and seq >= 1 else expected
                self._fail(
                    bad,
                    f"event {seq} appears after event {expected - 1}: events were duplicated, "
                    "inserted or reordered.",
                    self._cp(self.before_last) if bad == expected - 1 else None,
                )
            return False
        if prev_hash != self.last_hash:
            if seq == 1:
                self._fail(
                    1,
                    f"event 1 does not start log {self.log_id!r}: its prev_hash is not this "
                    "log's genesis hash, so it belongs to another log or was replaced.",
                    None,
                )
            else:
                self._fail(
                    seq - 1,
                    f"event {seq} does not chain to event {seq - 1}: its prev_hash is not event "
                    f"{seq - 1}'s hash, so event {seq - 1} was edited and re-hashed (or "
                    f"replaced), or event {seq} was forged.",
                    self._cp(self.before_last),
                )
            return False
        if seq == self.next_cp:
            cp = self.pending.pop()
            self.next_cp = self.pending[-1].seq if self.pending else -1
            if stored_hash != cp.hash:
                since = self.matched_cp.seq
                where = f"event {seq}" if since + 1 == seq else f"events {since + 1} to {seq}"
                self._fail(
                    since + 1,
                    f"event {seq} differs from {_at(cp)}: the log was rewritten (an event "
                    f"among {where} was changed or removed and every later hash recomputed).",
                    self.matched_cp if since > 0 else None,
                )
                return False
            self.matched_cp = cp
        self.expected = seq + 1
        self.last_hash = stored_hash
        self.before_last = self.last
        self.last = (seq, stored_hash, time)
        return True

    def malformed(self, line_no: int, reason: str) -> None:
        self.count += 1
        self._fail(
            self.expected,
            f"line {line_no} is not a valid audit event ({reason}): the log was corrupted or "
            "edited by hand.",
            self._cp(self.last),
        )

    def incomplete(self) -> None:
        seq = self.expected
        if self.pending and self.pending[0].seq >= seq:
            cp = self.pending[0]
            self._fail(
                seq,
                f"the last line is incomplete, but {_at(cp)} recorded event {cp.seq}: "
                f"the log was cut (not interrupted by a crash); {_events_range(seq, cp.seq)} "
                "gone.",
                self._cp(self.last),
            )
            return
        self._fail(
            seq,
            f"incomplete last line: the log was interrupted while writing event {seq}; the "
            f"{seq - 1} events before it verify. `python -m egress.audit repair FILE` drops the "
            "incomplete line (it never drops a complete event).",
            self._cp(self.last),
        )

    def finish(self) -> VerifyReport:
        if self.report is not None:
            return self.report
        if self.pending:
            cp = self.pending[0]  # the checkpoint with the highest seq
            first = self.expected
            ends = "the log is empty" if first == 1 else f"the log ends at event {first - 1}"
            self._fail(
                first,
                f"{ends} but {_at(cp)} recorded event {cp.seq}: {_events_range(first, cp.seq)} "
                "missing from the end of the log (it was truncated).",
                self._cp(self.last),
            )
            return self.report
        return VerifyReport(
            ok=True,
            events_checked=self.count,
            first_bad_seq=None,
            problem=None,
            head=self._cp(self.last) or Checkpoint.genesis(self.log_id),
            log_id=self.log_id,
        )


def _all_checkpoints(
    expected_head: Checkpoint | None, checkpoints: Iterable[Checkpoint]
) -> list[Checkpoint]:
    cps = list(checkpoints)
    if expected_head is not None:
        cps.append(expected_head)
    return cps


def verify(
    events: Iterable[AuditEvent],
    log_id: str,
    *,
    expected_head: Checkpoint | None = None,
    checkpoints: Iterable[Checkpoint] = (),
) -> VerifyReport:
    """Check a whole log, streaming (O(1) memory); stops at the first problem.

    Recomputes every event's hash from its canonical form and checks ``seq`` runs 1, 2, 3...,
    each ``prev_hash`` is the previous ``hash`` (the genesis hash of ``log_id`` for event 1),
    and, for ``expected_head`` and each of ``checkpoints``, that the log still holds that
    ``seq`` with that ``hash`` (a checkpoint beyond the log's end means the tail was cut).
    An :class:`AuditFormatError` raised by the ``events`` iterator (e.g. :func:`read_jsonl` on a
    malformed or incomplete line) becomes the report's problem.

    Without a checkpoint, an attacker who rewrites an event *and every later hash*, or cuts the
    tail, leaves a valid chain: only checkpoints kept outside the log catch that.
    """
    checker = _Checker(_check_log_id(log_id), _all_checkpoints(expected_head, checkpoints))
    if checker.report is not None:
        return checker.report
    iterator = iter(events)
    while True:
        try:
            ev = next(iterator)
        except StopIteration:
            break
        except IncompleteLineError:
            checker.incomplete()
            return checker.report  # type: ignore[return-value]
        except MalformedLineError as exc:
            checker.malformed(exc.line_no, exc.reason)
            return checker.report  # type: ignore[return-value]
        except AuditFormatError as exc:
            checker.malformed(checker.count + 1, str(exc))
            return checker.report  # type: ignore[return-value]
        try:
            content_ok = ev.compute_hash() == ev.hash
        except (TypeError, ValueError):  # e.g. NaN, non-str keys, surrogates
            content_ok = False
        if not checker.feed(ev.seq, ev.prev_hash, ev.hash, content_ok, ev.time):
            return checker.report  # type: ignore[return-value]
    return checker.finish()


class _Incomplete(Exception):
    """Raised by a line reader after the last line when that line had no newline."""


def _content_ok_slow(raw: bytes, data: dict[str, Any], stored: Any) -> bool:
    """Does a line that isn't in the exact stored form still hash right? (Slow path.)

    First the bytes as stored minus the hash member, then the canonical form of the parsed
    content (a line that was re-formatted but not changed).
    """
    i = raw.rfind(_HASH_MARKER)
    if i > 0 and hashlib.sha256(raw[:i] + raw[i + _HASH_SEGMENT_LEN :]).hexdigest() == stored:
        return True
    content = dict(data)
    del content["hash"]
    try:
        return hashlib.sha256(canonical_json(content)).hexdigest() == stored
    except (TypeError, ValueError):
        return False


def _has_event_shape(data: Any) -> bool:
    """What ``AuditEvent.from_dict`` accepts, checked fast (it explains what's wrong)."""
    return (
        type(data) is dict
        and data.keys() == _FIELD_SET
        and type(data["seq"]) is int
        and type(data["actor"]) is str
        and type(data["event"]) is str
        and type(data["time"]) is str
        and type(data["prev_hash"]) is str
        and type(data["hash"]) is str
        and type(data["details"]) is dict
        and type(data["file_hashes"]) is dict
        and (data["object"] is None or type(data["object"]) is str)
        and (data["project"] is None or type(data["project"]) is str)
        and (data["request_id"] is None or type(data["request_id"]) is str)
    )


_JSON_STR = rb'(null|"[^"\\]*(?:\\.[^"\\]*)*")'
# The members after "hash" in a canonical line, all scalars: what chaining needs.
_TAIL_RE = re.compile(
    rb',"object":'
    + _JSON_STR
    + rb',"prev_hash":"([0-9a-f]{64})","project":'
    + _JSON_STR
    + rb',"request_id":'
    + _JSON_STR
    + rb',"seq":([1-9][0-9]{0,18}),"time":"([0-9T:.Z-]{27})"\}'
)


def _scan(
    lines: Iterable[bytes], ck: _Checker, line_no: int = 0, *, full_parse: bool = False
) -> bool:
    """Check lines (without their newline) after ``ck``'s state; False at the first problem.

    The hot loop handles a line in the exact form ``AuditEvent.to_line`` writes: the canonical
    JSON of the event without ``hash`` (the *body*), with ``,"hash":"<64 hex>"`` spliced in
    before ``,"object":``. It hashes the body as stored (so any changed byte changes the hash:
    nothing is re-serialised) and reads the chaining fields (seq, prev_hash, time) from the
    members after the hash with a strict pattern, without parsing the whole event.

    Anything else (a re-formatted line, an altered one, a gap, a checkpoint due) takes the slow
    path: the line is parsed in full and handed to ``ck.feed``.

    What the hot loop does not do is parse ``actor``/``details``/``event``/``file_hashes``. That
    loses nothing for tamper evidence: their bytes are hashed, and a body that chains up to a
    checkpoint is byte-for-byte what the writer wrote (valid by construction). Past the last
    checkpoint, whoever can write the log can append anything with correct hashes, valid JSON or
    not, as with any hash chain. ``full_parse=True`` parses every line as :func:`read_jsonl` does,
    so that a verified log is also a readable one; it is about twice as slow.
    """
    loads = json.loads
    sha256 = hashlib.sha256
    hexlify = binascii.hexlify
    marker = _HASH_MARKER
    seg = _HASH_SEGMENT_LEN
    tail_match = _TAIL_RE.fullmatch
    field_keys = _FIELD_SET
    expected, next_cp = ck.expected, ck.next_cp
    last_hash = ck.last_hash.encode("ascii") if ck.last_hash.isascii() else b""
    last: re.Match[bytes] | None = None  # the hot loop's last two events, not yet in ck
    before: re.Match[bytes] | None = None
    fast = 0

    def sync() -> None:
        nonlocal fast, last, before
        if fast:
            assert last is not None
            if fast >= 2:
                assert before is not None  # its hash is last's prev_hash
                ck.before_last = (int(before[5]), last[2].decode(), before[6].decode())
            else:
                ck.before_last = ck.last
            ck.last = (int(last[5]), last_hash.decode(), last[6].decode())
            ck.expected, ck.last_hash, ck.count = expected, ck.last[1], ck.count + fast
            fast = 0
            last = before = None

    try:
        for raw in lines:
            line_no += 1
            i = raw.rfind(marker)
            m = tail_match(raw, i + seg) if i > 0 else None
            if (
                m is not None
                and raw[i + seg - 1] == 0x22  # the '"' closing the hash
                and int(m[5]) == expected
                and m[2] == last_hash
                and expected != next_cp
                and hexlify(sha256(raw[:i] + raw[i + seg :]).digest()) == raw[i + 9 : i + 73]
            ):
                if full_parse:
                    try:
                        data = loads(raw)
                    except ValueError:
                        data = None
                    if not _has_event_shape(data):
                        m = None  # report it through the slow path
                if m is not None:
                    expected += 1
                    last_hash = raw[i + 9 : i + 73]
                    before, last = last, m
                    fast += 1
                    continue
            # The slow path: parse the whole line.
            sync()
            try:
                data = loads(raw)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                ck.malformed(line_no, f"not JSON: {exc}")
                return False
            if type(data) is not dict or data.keys() != field_keys:
                ck.malformed(line_no, "not an object with exactly the event fields")
                return False
            if full_parse:
                try:
                    AuditEvent.from_dict(data)
                except AuditFormatError as exc:
                    ck.malformed(line_no, str(exc))
                    return False
            stored = data["hash"]
            content_ok = _content_ok_slow(raw, data, stored)
            if not ck.feed(data["seq"], data["prev_hash"], stored, content_ok, data["time"]):
                return False
            expected, next_cp = ck.expected, ck.next_cp
            last_hash = ck.last_hash.encode("ascii") if ck.last_hash.isascii() else b""
    except _Incomplete:
        sync()
        ck.incomplete()
        return False
    sync()
    return True


def _read_lines(f: BinaryIO, start: int, end: int, block: int = 1 << 22) -> Iterator[bytes]:
    """Lines (without ``\\n``) of ``f`` between byte offsets ``start`` and ``end``.

    Raises :class:`_Incomplete` after the last line if the range doesn't end with a newline.
    """
    f.seek(start)
    pos = start
    carry = b""
    while pos < end:
        chunk = f.read(min(block, end - pos))
        if not chunk:
            break  # the file shrank while we read it
        pos += len(chunk)
        lines = (carry + chunk if carry else chunk).split(b"\n")
        carry = lines.pop()
        yield from lines
    if carry:
        raise _Incomplete


def _stable_size(path: str | os.PathLike[str]) -> int:
    """The file's size between appends: a shared lock waits for an append in progress."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _log_id_of_first_line(line: bytes) -> str:
    """The log id recorded in a log's first event (a LOG_OPENED event with details.log_id)."""
    try:
        data = json.loads(line)
        if data.get("event") == EventType.LOG_OPENED and data.get("seq") == 1:
            log_id = data["details"]["log_id"]
            if isinstance(log_id, str) and log_id:
                return log_id
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    raise AuditFormatError(
        "can't tell which log this is: the first line is not event 1, a LOG_OPENED event with "
        "details.log_id (was it deleted?); pass the log id (--log-id) or a checkpoint"
    )


def _first_line(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.readline()


def _resolve_log_id(
    path: str | os.PathLike[str], log_id: str | None, checkpoints: list[Checkpoint]
) -> str:
    if log_id is not None:
        return log_id
    if checkpoints:
        return checkpoints[0].log_id
    return _log_id_of_first_line(_first_line(path))


def verify_lines(
    lines: Iterable[bytes | str],
    log_id: str,
    *,
    expected_head: Checkpoint | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    full_parse: bool = False,
) -> VerifyReport:
    """:func:`verify` for events stored as their lines (``AuditEvent.to_line()``), fast.

    For a store that keeps each event's line (e.g. a database column next to the fields): several
    times faster than rebuilding :class:`AuditEvent` objects (see :func:`_scan` for how, and for
    ``full_parse``). A trailing newline on a line is ignored.
    """
    checker = _Checker(_check_log_id(log_id), _all_checkpoints(expected_head, checkpoints))
    if checker.report is not None:
        return checker.report

    def as_bytes() -> Iterator[bytes]:
        for line in lines:
            raw = line.encode("utf-8") if isinstance(line, str) else line
            yield raw[:-1] if raw[-1:] == b"\n" else raw

    _scan(as_bytes(), checker, full_parse=full_parse)
    return checker.finish()


def verify_file(
    path: str | os.PathLike[str],
    log_id: str | None = None,
    *,
    expected_head: Checkpoint | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    full_parse: bool = False,
) -> VerifyReport:
    """:func:`verify` for a JSON-lines log, fast (see :func:`_scan` for how, and ``full_parse``).

    ``log_id`` defaults to the checkpoints' log id, else to the one recorded in the first
    (LOG_OPENED) event. Checks the file as it is between appends: it waits for an append in
    progress to finish, then ignores later ones. Reads in blocks: O(1) memory.
    """
    path = os.fspath(path)
    cps = _all_checkpoints(expected_head, checkpoints)
    log_id = _check_log_id(_resolve_log_id(path, log_id, cps))
    checker = _Checker(log_id, cps)
    if checker.report is not None:
        return checker.report
    size = _stable_size(path)
    with open(path, "rb") as f:
        _scan(_read_lines(f, 0, size), checker, full_parse=full_parse)
    return checker.finish()


# --------------------------------------------------------------------------------------------
# JSON lines


def _iter_lines(f: BinaryIO) -> Iterator[AuditEvent]:
    last_seq = 0
    for line_no, raw in enumerate(f, 1):
        if raw[-1:] != b"\n":
            raise IncompleteLineError(line_no, last_seq + 1)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MalformedLineError(line_no, f"not JSON: {exc}") from None
        try:
            ev = AuditEvent.from_dict(data)
        except AuditFormatError as exc:
            raise MalformedLineError(line_no, str(exc)) from None
        last_seq = ev.seq
        yield ev


def read_jsonl(source: str | os.PathLike[str] | BinaryIO) -> Iterator[AuditEvent]:
    """Stream the events of a JSON-lines log (a path or a binary file).

    Raises :class:`MalformedLineError` on a line that isn't an event and
    :class:`IncompleteLineError` on an unterminated last line (``verify`` turns both into a
    report). Does not verify the chain.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield from _iter_lines(f)
    else:
        yield from _iter_lines(source)


def write_jsonl(events: Iterable[AuditEvent], dest: str | os.PathLike[str] | BinaryIO) -> int:
    """Write events as JSON lines (a path is created or overwritten). Returns the count.

    For exports, tests and benchmarks; the live log is appended with :class:`AuditFile`.
    """
    if isinstance(dest, str | os.PathLike):
        with open(dest, "wb") as f:
            return write_jsonl(events, f)
    count = 0
    for ev in events:
        dest.write(ev.to_line())
        count += 1
    return count


# --------------------------------------------------------------------------------------------
# The file store


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _tail(fd: int) -> tuple[bytes, bytes, int]:
    """(last complete line or b"", trailing bytes after the last newline, offset of those).

    Reads backwards from the end in blocks; O(length of the last lines), not of the file.
    """
    size = os.fstat(fd).st_size
    block = 8192
    buf = b""
    pos = size
    # Find the last newline (end of the last complete line).
    while pos > 0:
        step = min(block, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        nl = buf.rfind(b"\n")
        if nl >= 0:
            end = pos + nl + 1  # offset just after the last complete line
            trailing = buf[nl + 1 :]
            head_part = buf[: nl + 1]
            # Now find the start of that line.
            start_in = head_part.rfind(b"\n", 0, len(head_part) - 1)
            while start_in < 0 and pos > 0:
                step = min(block, pos)
                pos -= step
                head_part = os.pread(fd, step, pos) + head_part
                start_in = head_part.rfind(b"\n", 0, len(head_part) - 1)
            return head_part[start_in + 1 :], trailing, end
    return b"", buf, 0


def _event_of_line(raw: bytes, what: str) -> AuditEvent:
    try:
        return AuditEvent.from_dict(json.loads(raw))
    except ValueError as exc:
        raise AuditFormatError(f"{what} is not a valid audit event: {exc}") from None


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What :func:`repair_truncated_tail` did.

    ``action``: ``"none"`` (the file ended with a complete line), ``"completed"`` (the last line
    was a whole, correctly chained event missing only its newline: the newline was added) or
    ``"dropped"`` (an incomplete line was cut off; its bytes are in ``dropped``).
    """

    action: str
    seq: int | None = None
    dropped: bytes = field(default=b"", repr=False)


def repair_truncated_tail(path: str | os.PathLike[str]) -> RepairResult:
    """Drop an incomplete last line (a crash mid-write); never a complete event.

    If the unterminated last line is in fact a whole event that chains onto the one before it
    (only the newline is missing), the newline is added instead and nothing is lost. Takes the
    same lock as :meth:`AuditFile.append`.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last_line, trailing, end = _tail(fd)
        if not trailing:
            return RepairResult("none")
        prev = _event_of_line(last_line, "the last complete line") if last_line else None
        seq = prev.seq + 1 if prev else 1
        try:
            candidate = AuditEvent.from_dict(json.loads(trailing))
            whole = (
                candidate.seq == seq
                and candidate.compute_hash() == candidate.hash
                and (prev is None or candidate.prev_hash == prev.hash)
                and (prev is not None or candidate.event == EventType.LOG_OPENED)
            )
        except (ValueError, TypeError):
            whole = False
        if whole:
            os.lseek(fd, 0, os.SEEK_END)
            _write_all(fd, b"\n")
            os.fsync(fd)
            return RepairResult("completed", seq)
        os.ftruncate(fd, end)
        os.fsync(fd)
        return RepairResult("dropped", seq, trailing)
    finally:
        os.close(fd)


class AuditFile:
    """An audit log in a JSON-lines file: create, append (fsync'd), read back, verify.

    The first event is ``LOG_OPENED`` with ``details.log_id``, which makes the file
    self-describing. Appends take an exclusive ``flock``, re-read the head from the end of the
    file and write one line with ``O_APPEND``, then ``fsync``: several processes can append
    safely. An incomplete last line blocks appends (:class:`AuditFormatError`) until
    :func:`repair_truncated_tail` is run: the log fails closed rather than gluing a new event onto
    a broken one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._log_id: str | None = None

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        log_id: str,
        *,
        actor: str = "havre",
        details: Mapping[str, Any] | None = None,
        time: str | datetime | None = None,
        mode: int = 0o640,
    ) -> AuditFile:
        """Start a new log (``FileExistsError`` if the file exists) with its LOG_OPENED event."""
        first = next_event(
            None,
            log_id,
            actor=actor,
            event=EventType.LOG_OPENED,
            details={**(details or {}), "log_id": log_id},
            time=time,
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, mode)
        try:
            _write_all(fd, first.to_line())
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path)
        log = cls(path)
        log._log_id = log_id
        return log

    @property
    def log_id(self) -> str:
        if self._log_id is None:
            self._log_id = _log_id_of_first_line(_first_line(self.path))
        return self._log_id

    def head(self) -> AuditEvent | None:
        """The last event (``None`` if the file is empty). Does not verify the log."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            last_line, trailing, _ = _tail(fd)
        finally:
            os.close(fd)
        if trailing:
            raise AuditFormatError(
                f"{self.path}: the last line is incomplete (a write was interrupted); run "
                "`python -m egress.audit repair` after checking the log"
            )
        return _event_of_line(last_line, "the last line") if last_line else None

    def checkpoint(self) -> Checkpoint:
        """The head as a checkpoint: write it somewhere the log's writer can't rewrite."""
        head = self.head()
        if head is None:
            return Checkpoint.genesis(self.log_id)
        return Checkpoint.of(head, self.log_id)

    def append(self, *, actor: str, event: EventType | str, **fields: Any) -> AuditEvent:
        """Append one event (fields as for :func:`next_event`); returns it once it is on disk."""
        log_id = self.log_id
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last_line, trailing, _ = _tail(fd)
            if trailing:
                raise AuditFormatError(
                    f"{self.path}: the last line is incomplete (a write was interrupted); "
                    "refusing to append until `python -m egress.audit repair` is run"
                )
            head = _event_of_line(last_line, "the last line") if last_line else None
            ev = next_event(head, log_id, actor=actor, event=event, **fields)
            _write_all(fd, ev.to_line())
            os.fsync(fd)
            return ev
        finally:
            os.close(fd)  # also releases the lock

    def __iter__(self) -> Iterator[AuditEvent]:
        return read_jsonl(self.path)

    def verify(
        self,
        *,
        expected_head: Checkpoint | None = None,
        checkpoints: Iterable[Checkpoint] = (),
        full_parse: bool = False,
    ) -> VerifyReport:
        return verify_file(
            self.path,
            self.log_id,
            expected_head=expected_head,
            checkpoints=checkpoints,
            full_parse=full_parse,
        )


def append_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Append a checkpoint to a JSON-lines checkpoint file (fsync'd), creating it if needed.

    Keep this file away from the log: another directory or host, another owner, or an
    append-only (``chattr +a``) file. The signed release records carry checkpoints too.
    """
    existed = os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _write_all(fd, checkpoint.to_json().encode("utf-8") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        _fsync_dir(path)


def _checkpoint_of_json(data: Any) -> Checkpoint:
    # A checkpoint, a release record ({"audit_head": ...}) or a signed one ({"record": ...}).
    if isinstance(data, dict) and isinstance(data.get("record"), dict):
        data = data["record"]
    if isinstance(data, dict) and isinstance(data.get("audit_head"), dict):
        data = data["audit_head"]
    return Checkpoint.from_dict(data)


def read_checkpoints(path: str | os.PathLike[str]) -> list[Checkpoint]:
    """Checkpoints from a file: one JSON object, or JSON lines of them.

    Each object is a checkpoint, or a (signed) release record whose ``audit_head`` is used; its
    signature is *not* checked here (use ``egress.signing.verify_record``).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return [_checkpoint_of_json(json.loads(text))]
    except ValueError:
        pass
    cps = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                cps.append(_checkpoint_of_json(json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"{path}, line {line_no}: not a checkpoint: {exc}") from None
    return cps


# --------------------------------------------------------------------------------------------
# Command line

#: The columns of an exported audit log (CSV).
CSV_COLUMNS = (
    "seq",
    "time",
    "actor",
    "event",
    "project",
    "request_id",
    "object",
    "file_hashes",
    "details",
    "prev_hash",
    "hash",
)


def csv_cell(value: Any) -> str:
    """One value of an event as a CSV cell that spreadsheets won't run as a formula."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        text = canonical_json(value).decode("utf-8")
    else:
        text = str(value)
    # File names and comments come from users: stop spreadsheets reading them as formulas.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def _report_line(report: VerifyReport, path: str) -> str:
    if report.ok:
        head = report.head
        assert head is not None
        return (
            f"{path}: ok: {report.events_checked} events verified; head: event {head.seq} "
            f"{head.hash}"
        )
    where = f" (first bad event: {report.first_bad_seq})" if report.first_bad_seq else ""
    return f"{path}: FAILED{where}: {report.problem}"


def _cli_checkpoints(paths: list[str]) -> list[Checkpoint]:
    cps: list[Checkpoint] = []
    for p in paths:
        cps.extend(read_checkpoints(p))
    return cps


def _export(args: argparse.Namespace, cps: list[Checkpoint]) -> VerifyReport:
    log_id = _check_log_id(_resolve_log_id(args.file, args.log_id, cps))
    checker = _Checker(log_id, cps)
    if checker.report is not None:
        return checker.report
    out = (
        open(args.output, "w", encoding="utf-8", newline="")
        if args.output
        else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    )
    writer = csv.writer(out) if args.format == "csv" else None
    try:
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        # Export everything readable, verifying as we go; the verdict comes at the end.
        failed = False
        try:
            for ev in read_jsonl(args.file):
                if writer is not None:
                    writer.writerow([csv_cell(getattr(ev, c)) for c in CSV_COLUMNS])
                else:
                    out.write(canonical_json(ev.to_dict()).decode("utf-8") + "\n")
                if not failed:
                    try:
                        content_ok = ev.compute_hash() == ev.hash
                    except (TypeError, ValueError):
                        content_ok = False
                    failed = not checker.feed(ev.seq, ev.prev_hash, ev.hash, content_ok, ev.time)
        except IncompleteLineError:
            if not failed:
                checker.incomplete()
        except MalformedLineError as exc:
            if not failed:
                checker.malformed(exc.line_no, exc.reason)
        return checker.finish()
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
            out.detach()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m egress.audit", description="Check and export Havre's audit log."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def log_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="the audit log (JSON lines)")
        p.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="FILE",
            help="a checkpoint file (JSON or JSON lines; a release record works too). The log "
            "must still hold every checkpointed event. Repeatable.",
        )
        p.add_argument("--log-id", help="the log's id (default: from the checkpoint/first event)")

    ver = sub.add_parser("verify", help="verify the hash chain (exit 1 if it fails)")
    log_args(ver)
    ver.add_argument(
        "--full",
        action="store_true",
        help="also parse every event in full (slower): a verified log is then also a readable "
        "one, even past the last checkpoint",
    )
    exp = sub.add_parser("export", help="export the events (and verify them)")
    log_args(exp)
    exp.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    exp.add_argument("--output", "-o", help="write here instead of stdout")
    sub.add_parser("checkpoint", help="print the head checkpoint as JSON").add_argument("file")
    sub.add_parser("repair", help="drop an incomplete last line").add_argument("file")
    args = parser.parse_args(argv)

    try:
        if args.command == "checkpoint":
            print(AuditFile(args.file).checkpoint().to_json())
            return 0
        if args.command == "repair":
            result = repair_truncated_tail(args.file)
            if result.action == "none":
                print(f"{args.file}: nothing to repair (the last line is complete)")
            elif result.action == "completed":
                print(f"{args.file}: event {result.seq} was whole; added its missing newline")
            else:
                print(
                    f"{args.file}: dropped an incomplete line of {len(result.dropped)} bytes "
                    f"(event {result.seq} was never completely written)"
                )
            return 0
        cps = _cli_checkpoints(args.checkpoint)
        if args.command == "verify":
            report = verify_file(args.file, args.log_id, checkpoints=cps, full_parse=args.full)
            line = _report_line(report, args.file)
            print(line, file=sys.stdout if report.ok else sys.stderr)
        else:
            report = _export(args, cps)
            if not report.ok:
                print(_report_line(report, args.file), file=sys.stderr)
        return 0 if report.ok else 1
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            return 1
        print(f"{args.file}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
