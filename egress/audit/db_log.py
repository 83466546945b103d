"""The hash-chained audit log kept in the ``audit_events`` table (see ``egress.audit.chain``).

Appending happens inside the caller's write transaction, so an event is stored if and only if
the change it records is:

1. :func:`lock` the single ``audit_log`` row (``SELECT ... FOR UPDATE``; on SQLite the
   transaction already holds the write lock from ``BEGIN IMMEDIATE``). This is the first thing
   every write transaction does, before it reads anything it decides on.
2. :func:`append` reads the head event, builds ``egress.audit.chain.next_event(head, ...)`` (which
   re-hashes the head and fails closed if it was altered), inserts it (``seq`` is the primary
   key) and moves the head in ``audit_log``.

The first event of a database is ``LOG_OPENED`` with ``details.log_id`` (created by
:func:`ensure_log`); the log id is random per installation, so two installations' events can't
be spliced together. ``audit_log.head_seq``/``head_hash`` double as a checkpoint inside the
database: :func:`verify_chain` fails if the last events were deleted without it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from egress.audit.chain import AuditChainError, AuditEvent, Checkpoint, EventType, next_event
from egress.audit.verify import VerifyReport, verify_lines
from egress.store.db import write_session
from egress.store.models import AuditEventRow, AuditLogRow

__all__ = [
    "LOG_ROW_ID",
    "append",
    "ensure_log",
    "head_checkpoint",
    "iter_lines",
    "lock",
    "verify_chain",
]

LOG_ROW_ID = 1


def lock(session: Session) -> AuditLogRow:
    """Lock the audit log for this transaction and return its row (id and head).

    Raises :class:`AuditChainError` when the database has no audit log yet (run
    :func:`ensure_log`, which ``EgressService`` does when it starts).
    """
    row = session.execute(
        select(AuditLogRow).where(AuditLogRow.id == LOG_ROW_ID).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise AuditChainError("the audit log is not initialised (no audit_log row)")
    return row


def _event_of(line: str) -> AuditEvent:
    return AuditEvent.from_dict(json.loads(line))


def _head_event(session: Session, row: AuditLogRow) -> AuditEvent:
    line = session.execute(
        select(AuditEventRow.line).where(AuditEventRow.seq == row.head_seq)
    ).scalar_one_or_none()
    if line is None:
        raise AuditChainError(
            f"the audit head (event {row.head_seq}) is missing from audit_events: the log was "
            "altered; run `havre-egress-admin verify` before anything else"
        )
    head = _event_of(line)
    if head.hash != row.head_hash or head.seq != row.head_seq:
        raise AuditChainError(
            f"the audit head recorded in audit_log (event {row.head_seq}) is not the stored "
            "event: the log was altered; run `havre-egress-admin verify`"
        )
    return head


def append(
    session: Session,
    log: AuditLogRow,
    *,
    actor: str,
    event: EventType | str,
    time: str | datetime,
    project: str | None = None,
    request_id: str | None = None,
    object: str | None = None,
    file_hashes: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event after the head of the locked ``log`` row; returns the event."""
    head = _head_event(session, log)
    ev = next_event(
        head,
        log.log_id,
        actor=actor,
        event=event,
        project=project,
        request_id=request_id,
        object=object,
        file_hashes=file_hashes,
        details=details,
        time=time,
    )
    _insert(session, ev)
    log.head_seq = ev.seq
    log.head_hash = ev.hash
    session.flush()
    return ev


def _insert(session: Session, ev: AuditEvent) -> None:
    session.add(
        AuditEventRow(
            seq=ev.seq,
            line=ev.to_line().decode("utf-8").rstrip("\n"),
            event=ev.event,
            actor=ev.actor,
            project=ev.project,
            request_id=ev.request_id,
            time=ev.time,
        )
    )


def ensure_log(
    engine: Engine,
    clock: Callable[[], datetime],
    *,
    log_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Open the audit log (a ``LOG_OPENED`` event) unless the database has one; its log id.

    Safe to call from several processes at once: the loser of a race sees the winner's log.
    """
    for _attempt in range(3):
        try:
            with write_session(engine) as session:
                row = session.execute(
                    select(AuditLogRow).where(AuditLogRow.id == LOG_ROW_ID).with_for_update()
                ).scalar_one_or_none()
                if row is not None:
                    return row.log_id
                if session.execute(select(func.count()).select_from(AuditEventRow)).scalar():
                    raise AuditChainError(
                        "audit_events holds events but the audit_log row is missing: the log "
                        "was altered; run `havre-egress-admin verify`"
                    )
                new_id = log_id or f"havre-egress-{secrets.token_hex(8)}"
                now = clock()
                first = next_event(
                    None,
                    new_id,
                    actor="havre",
                    event=EventType.LOG_OPENED,
                    details={**(details or {}), "log_id": new_id},
                    time=now,
                )
                _insert(session, first)
                session.add(
                    AuditLogRow(
                        id=LOG_ROW_ID,
                        log_id=new_id,
                        head_seq=first.seq,
                        head_hash=first.hash,
                        created_at=now,
                    )
                )
                return new_id
        except IntegrityError:
            continue  # another process opened the log meanwhile: read theirs
    raise AuditChainError("could not open the audit log")


def head_checkpoint(session: Session) -> Checkpoint | None:
    """The head recorded in ``audit_log`` (``None`` before :func:`ensure_log`)."""
    row = session.get(AuditLogRow, LOG_ROW_ID)
    if row is None:
        return None
    time = session.execute(
        select(AuditEventRow.time).where(AuditEventRow.seq == row.head_seq)
    ).scalar_one_or_none()
    return Checkpoint(row.log_id, row.head_seq, row.head_hash, time or "")


def iter_lines(session: Session, batch: int = 5000) -> Iterator[tuple[int, str]]:
    """``(seq, line)`` of every stored event in ``seq`` order, streamed in batches."""
    last = None
    while True:
        query = select(AuditEventRow.seq, AuditEventRow.line).order_by(AuditEventRow.seq)
        if last is not None:
            query = query.where(AuditEventRow.seq > last)
        rows = session.execute(query.limit(batch)).all()
        if not rows:
            return
        yield from ((seq, line) for seq, line in rows)
        last = rows[-1][0]


def verify_chain(
    session: Session,
    *,
    checkpoints: Iterable[Checkpoint] = (),
    lines: Iterable[str] | None = None,
    full_parse: bool = False,
) -> VerifyReport:
    """Verify the stored chain against the head in ``audit_log`` and ``checkpoints``.

    ``lines`` defaults to every stored line (pass a generator over :func:`iter_lines` to look
    at the events on the way). An empty database (no log, no events) verifies.
    """
    row = session.get(AuditLogRow, LOG_ROW_ID)
    cps = list(checkpoints)
    if lines is None:
        lines = (line for _seq, line in iter_lines(session))
    if row is None:
        first = session.execute(
            select(AuditEventRow.line).order_by(AuditEventRow.seq).limit(1)
        ).scalar_one_or_none()
        if first is None:
            log_id = cps[0].log_id if cps else "havre-egress"
            return verify_lines([], log_id, checkpoints=cps)
        return VerifyReport(
            ok=False,
            events_checked=0,
            first_bad_seq=None,
            problem="the audit_log row (the log's id and head) is missing: the log was altered.",
            head=None,
        )
    head = Checkpoint(row.log_id, row.head_seq, row.head_hash, "")
    return verify_lines(
        (line.encode("utf-8") for line in lines),
        row.log_id,
        expected_head=head,
        checkpoints=cps,
        full_parse=full_parse,
    )
