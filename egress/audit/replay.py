"""Verification and export of the egress audit log against the database.

:func:`verify_database` checks the hash chain, the head recorded in the database, any
checkpoints (an external file and every signed release record's ``audit_head``; each record's
signature is checked too), and then **replays the log against the tables**: every request's
state and round, files (and their hashes), votes, reviews, comments, group texts and release
records must be exactly what the events say. An ``UPDATE votes SET vote = 'approve'`` or a
swapped file hash made directly in the database is therefore caught, not only an edited event.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from egress.audit import db_log as audit_log
from egress.audit.chain import AuditEvent, Checkpoint, EventType
from egress.audit.export import CSV_COLUMNS, csv_cell
from egress.audit.file_log import append_checkpoint, read_checkpoints
from egress.audit.signing import verify_record
from egress.audit.verify import VerifyReport
from egress.domain.errors import InvalidInput, log
from egress.domain.workflow import Vote
from egress.store.db import read_session
from egress.store.models import (
    AuditEventRow,
    AuditLogRow,
    Comment,
    FileGroup,
    Release,
    Request,
    RequestFile,
    Review,
)
from egress.store.models import Vote as VoteRow
from havre.enclave.logs import security_event

__all__ = [
    "export_database_audit",
    "failed_report",
    "missing_release_checkpoints",
    "reconcile_checkpoints",
    "sha256_text",
    "verify_database",
]


def sha256_text(text: str) -> str:
    """The hex SHA-256 of ``text`` in UTF-8 (how events record texts they don't carry)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def failed_report(report: VerifyReport | None, problem: str, log_id: str) -> VerifyReport:
    return VerifyReport(
        ok=False,
        events_checked=report.events_checked if report else 0,
        first_bad_seq=None,
        problem=problem,
        head=report.head if report else None,
        log_id=log_id,
    )


class _Mismatch(Exception):
    pass


@dataclass
class _ReplayedRequest:
    project: str
    author: str
    state: str = ""
    round: int = 1
    files: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    groups: dict[str, tuple[str, str]] = field(default_factory=dict)
    votes: dict[tuple[int, str, str], str] = field(default_factory=dict)
    reviews: set[tuple[str, int]] = field(default_factory=set)
    comments: dict[int, tuple[str, str, int, str, bool, str | None]] = field(default_factory=dict)
    release: str | None = None


_EMPTY = sha256_text("")


class _Replay:
    """What the tables must hold, rebuilt from the audit events (one pass, in seq order)."""

    def __init__(self) -> None:
        self.requests: dict[str, _ReplayedRequest] = {}

    def feed(self, seq: int, line: str, columns: tuple[Any, ...]) -> None:
        try:
            ev = json.loads(line)
        except ValueError:
            raise _Mismatch(f"event {seq}: the stored line is not JSON") from None
        if not isinstance(ev, dict):
            raise _Mismatch(f"event {seq}: the stored line is not an event")
        expected = (ev.get("seq"), ev.get("event"), ev.get("actor"), ev.get("project"))
        expected += (ev.get("request_id"), ev.get("time"))
        if tuple(columns) != expected:
            raise _Mismatch(
                f"event {seq}: the audit_events columns (event, actor, project, request_id, time) "
                "don't match the stored line: the row was edited"
            )
        request_id = ev.get("request_id")
        if request_id is None:
            return
        name, details = ev["event"], ev.get("details") or {}
        actor, path = ev["actor"], ev.get("object")
        if name == EventType.REQUEST_CREATED:
            self.requests[request_id] = _ReplayedRequest(project=ev["project"], author=actor)
        r = self.requests.get(request_id)
        if r is None:
            raise _Mismatch(f"event {seq} is about request {request_id}, which was never created")
        if "state" in details:
            r.state = details["state"]
        if "round" in details and name in (EventType.SUBMITTED, EventType.RESUBMITTED):
            r.round = details["round"]
        if name == EventType.FILE_ADDED:
            group = details["group"]
            r.files[path] = (ev["file_hashes"][path], details["release_sha256"], group)
            r.groups.setdefault(group, (_EMPTY, _EMPTY))
        elif name == EventType.FILE_REMOVED:
            r.files.pop(path, None)
            r.votes = {k: v for k, v in r.votes.items() if k[1] != path}
            r.comments = {i: (*c[:5], None) if c[5] == path else c for i, c in r.comments.items()}
        elif name == EventType.CONTEXT_EDITED:
            r.groups[path] = (details["context_sha256"], details["controls_sha256"])
        elif name == EventType.RESUBMITTED:
            for file_path, votes in details.get("votes", {}).items():
                for reviewer, vote in votes.items():
                    r.votes[(r.round, file_path, reviewer)] = vote
        elif name == EventType.VOTED:
            r.votes[(details["round"], path, actor)] = details["vote"]
        elif name == EventType.VOTE_RESET:
            for file_path in details["files"]:
                r.votes[(details["round"], file_path, actor)] = Vote.UNDECIDED.value
        elif name == EventType.REVIEW_SUBMITTED:
            r.reviews.add((actor, details["round"]))
        elif name == EventType.COMMENTED:
            r.comments[details["comment_id"]] = (
                actor,
                details["visibility"],
                details["round"],
                details["body_sha256"],
                details["during_review"],
                path,
            )
        elif name == EventType.RELEASED:
            r.release = details["record_sha256"]

    def compare(self, session: Session) -> str | None:
        """The first difference between the tables and the replayed events, or ``None``."""
        stored = {r.id: r for r in session.execute(select(Request)).scalars()}
        for request_id in sorted(set(stored) | set(self.requests)):
            if request_id not in self.requests:
                return f"request {request_id} is in the database but no event created it"
            if request_id not in stored:
                return f"request {request_id} was created in the audit log but is missing"
            problem = self._compare_one(session, stored[request_id], self.requests[request_id])
            if problem:
                return f"request {request_id}: {problem}"
        return None

    @staticmethod
    def _compare_one(session: Session, req: Request, r: _ReplayedRequest) -> str | None:
        if (req.project, req.author) != (r.project, r.author):
            return "its project or author differs from the audit log"
        if req.state != r.state:
            return f"it is {req.state} in the database but {r.state} in the audit log"
        if req.round != r.round:
            return f"it is in round {req.round} in the database but {r.round} in the audit log"
        files = {
            f.path: (f.sha256, f.release_sha256, f.group)
            for f in session.execute(
                select(RequestFile).where(RequestFile.request_id == req.id)
            ).scalars()
        }
        if files != r.files:
            diff = sorted(set(files.items()) ^ set(r.files.items()))
            return f"its files differ from the audit log (e.g. {diff[0][0]})"
        paths = dict(
            session.execute(
                select(RequestFile.id, RequestFile.path).where(RequestFile.request_id == req.id)
            ).all()
        )
        votes = {
            (round_, paths.get(file_id, "?"), reviewer): vote
            for file_id, reviewer, round_, vote in session.execute(
                select(VoteRow.file_id, VoteRow.reviewer, VoteRow.round, VoteRow.vote).where(
                    VoteRow.request_id == req.id
                )
            )
        }
        if votes != r.votes:
            diff = sorted(set(votes.items()) ^ set(r.votes.items()))
            (round_, path, reviewer), _ = diff[0]
            return f"the vote of {reviewer} on {path} in round {round_} differs from the audit log"
        reviews = set(
            session.execute(
                select(Review.reviewer, Review.round).where(Review.request_id == req.id)
            ).all()
        )
        if reviews != r.reviews:
            return "its submitted reviews differ from the audit log"
        groups = {
            g.name: (sha256_text(g.context), sha256_text(g.controls))
            for g in session.execute(
                select(FileGroup).where(FileGroup.request_id == req.id)
            ).scalars()
        }
        if groups != r.groups:
            return "the context or controls of a file group differ from the audit log"
        comments = {
            c.id: (
                c.author,
                c.visibility,
                c.round,
                sha256_text(c.body),
                c.during_review,
                paths.get(c.file_id or 0),
            )
            for c in session.execute(select(Comment).where(Comment.request_id == req.id)).scalars()
        }
        if comments != r.comments:
            return "its comments differ from the audit log"
        release = session.execute(
            select(Release.record_json).where(Release.request_id == req.id)
        ).scalar_one_or_none()
        if (release and sha256_text(release)) != r.release:
            return "its release record differs from the one the audit log recorded"
        if (release is not None) != (req.state in ("released", "revoked")):
            return f"it is {req.state} but has {'a' if release else 'no'} release record"
        return None


def _release_checkpoints(
    session: Session, public_key: Ed25519PublicKey | None
) -> tuple[list[Checkpoint], str | None]:
    cps = []
    for request_id, record_json in session.execute(
        select(Release.request_id, Release.record_json).order_by(Release.id)
    ):
        try:
            signed = json.loads(record_json)
            cps.append(Checkpoint.from_dict(signed["record"]["audit_head"]))
        except (ValueError, KeyError, TypeError):
            return cps, f"the release record of request {request_id} is unreadable"
        if public_key is not None and not verify_record(signed, public_key):
            return cps, (
                f"the release record of request {request_id} does not verify with the service's "
                "public key: it was altered"
            )
    return cps, None


def missing_release_checkpoints(
    engine: Engine, kept: Iterable[Checkpoint]
) -> list[tuple[str, Checkpoint]]:
    """The checkpoints of releases that are not in ``kept``, from the audit log's RELEASED
    events (the head right after each release, as :meth:`EgressService.release` appends it):
    ``[(request id, checkpoint)]`` in log order. A release commits before its checkpoint is
    appended, so a crash in between leaves one missing (issue #13)."""
    have = {(c.log_id, c.seq, c.hash) for c in kept}
    missing = []
    with read_session(engine) as session:
        row = session.get(AuditLogRow, audit_log.LOG_ROW_ID)
        if row is None:
            return []
        for request_id, line in session.execute(
            select(AuditEventRow.request_id, AuditEventRow.line)
            .where(AuditEventRow.event == EventType.RELEASED.value)
            .order_by(AuditEventRow.seq)
        ):
            event = AuditEvent.from_dict(json.loads(line))
            checkpoint = Checkpoint.of(event, row.log_id)
            if (checkpoint.log_id, checkpoint.seq, checkpoint.hash) not in have:
                missing.append((request_id or "", checkpoint))
    return missing


def reconcile_checkpoints(
    engine: Engine,
    path: Path,
    *,
    kept: Iterable[Checkpoint] | None = None,
    public_key: Ed25519PublicKey | None = None,
    replay: bool = False,
) -> tuple[list[tuple[str, Checkpoint]], VerifyReport]:
    """Append to the checkpoint file at ``path`` the checkpoints of releases missing from it.

    Only a sound log is copied out: the database is verified first against the checkpoints
    already in the file (``kept``: read from it when not given) and the release records, and
    nothing is appended when that fails
    (a checkpoint taken from a rewritten log would vouch for the rewrite). Returns what was
    appended and the verification's report.
    """
    if kept is None:
        kept = read_checkpoints(path) if path.exists() else []
    kept = list(kept)
    report = verify_database(engine, public_key=public_key, checkpoints=kept, replay=replay)
    if not report.ok:
        return [], report
    missing = missing_release_checkpoints(engine, kept)
    for request_id, checkpoint in missing:
        append_checkpoint(path, checkpoint)
        security_event(
            log,
            "audit.checkpoint_appended",
            "appended the missing audit checkpoint of the release of %s (event %d) to %s",
            request_id,
            checkpoint.seq,
            path,
            request_id=request_id,
            event_id=checkpoint.seq,
        )
    return missing, report


def verify_database(
    engine: Engine,
    *,
    public_key: Ed25519PublicKey | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    replay: bool = True,
) -> VerifyReport:
    """Verify the audit log stored in the database and (``replay``) the tables against it.

    Checks, in order: the signatures of the stored release records (with ``public_key``, when
    given); the hash chain, the head recorded in ``audit_log``, the release records'
    ``audit_head`` checkpoints and ``checkpoints``; that no event follows the recorded head;
    that each row's query columns match its line; then that the tables hold exactly what the
    events say. Returns the first problem (``ok`` false), or the head when all is well.
    """
    with read_session(engine) as session:
        row = session.get(AuditLogRow, audit_log.LOG_ROW_ID)
        log_id = row.log_id if row else ""
        release_cps, problem = _release_checkpoints(session, public_key)
        if problem:
            return failed_report(None, problem, log_id)
        replayed = _Replay()
        mismatch: list[str] = []

        def lines() -> Iterator[str]:
            query = select(
                AuditEventRow.seq,
                AuditEventRow.line,
                AuditEventRow.event,
                AuditEventRow.actor,
                AuditEventRow.project,
                AuditEventRow.request_id,
                AuditEventRow.time,
            ).order_by(AuditEventRow.seq)
            last = None
            while True:
                page = query if last is None else query.where(AuditEventRow.seq > last)
                rows = session.execute(page.limit(5000)).all()
                if not rows:
                    return
                for seq, line, *columns in rows:
                    if replay and not mismatch:
                        try:
                            replayed.feed(seq, line, (seq, *columns))
                        except (_Mismatch, KeyError, TypeError, AttributeError) as exc:
                            text = exc.args[0] if isinstance(exc, _Mismatch) else repr(exc)
                            mismatch.append(f"event {seq} can't be replayed: {text}")
                    yield line
                last = rows[-1][0]

        report = audit_log.verify_chain(
            session, checkpoints=[*release_cps, *checkpoints], lines=lines()
        )
        if not report.ok:
            return report
        if row is None:
            if session.execute(select(func.count()).select_from(Request)).scalar():
                return failed_report(report, "requests exist but the audit log is empty", log_id)
            return report
        if report.head is None or report.head.seq != row.head_seq:
            last_seq = report.head.seq if report.head else 0
            return failed_report(
                report,
                f"events {row.head_seq + 1} to {last_seq} follow the head recorded in "
                "audit_log: they were inserted behind the service's back",
                log_id,
            )
        if mismatch:
            return failed_report(report, mismatch[0], log_id)
        if replay:
            problem = replayed.compare(session)
            if problem:
                return failed_report(
                    report, f"the database disagrees with the audit log: {problem}", log_id
                )
        return report


def export_database_audit(engine: Engine, fmt: str, dest: IO[str]) -> VerifyReport:
    """Write every stored event to ``dest`` (``csv`` or ``jsonl``) and verify the chain.

    Everything readable is exported, whatever the verdict; check the returned report.
    """
    if fmt not in ("csv", "jsonl"):
        raise InvalidInput(f"unknown export format {fmt!r}; use csv or jsonl")
    writer = csv.writer(dest) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)

    def write(line: str) -> None:
        if writer is None:
            dest.write(line + "\n")
            return
        try:
            event = json.loads(line)
            writer.writerow([csv_cell(event.get(c)) for c in CSV_COLUMNS])
        except (ValueError, AttributeError):
            writer.writerow([csv_cell(line)])

    with read_session(engine) as session:
        written = 0

        def lines() -> Iterator[str]:
            nonlocal written
            for _seq, line in audit_log.iter_lines(session):
                write(line)
                written += 1
                yield line

        report = audit_log.verify_chain(session, lines=lines())
        if not report.ok:  # verification stopped at the first problem: export the rest anyway
            for index, (_seq, line) in enumerate(audit_log.iter_lines(session)):
                if index >= written:
                    write(line)
        return report
