"""The audit log as a JSON-lines file, and the checkpoint files kept beside it elsewhere.

:class:`AuditFile` is the simplest real store: one event per line in canonical JSON (including
``hash``), appended with ``O_APPEND`` + ``fsync`` under an exclusive ``flock``. A crash part-way
through a write leaves an incomplete last line; :func:`~egress.audit.verify.verify_file` reports
it as such, and :func:`repair_truncated_tail` drops it (never a complete event).

A checkpoint file (:func:`append_checkpoint`, :func:`read_checkpoints`) holds heads of a log; it
is only worth something kept where the log's writer can't rewrite it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from egress.audit.chain import (
    AuditEvent,
    AuditFormatError,
    Checkpoint,
    EventType,
    IncompleteLineError,
    MalformedLineError,
    next_event,
)
from egress.audit.verify import VerifyReport, recorded_log_id, verify_file

__all__ = [
    "AuditFile",
    "RepairResult",
    "append_checkpoint",
    "read_checkpoints",
    "read_jsonl",
    "repair_truncated_tail",
]


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
            self._log_id = recorded_log_id(self.path)
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
    signature is *not* checked here (use ``egress.audit.signing.verify_record``).
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
