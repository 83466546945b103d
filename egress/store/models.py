"""The egress service's tables (SQLAlchemy 2.0 declarative models).

The same models run on SQLite (the default, WAL mode) and PostgreSQL. The schema itself is
created and changed only by the Alembic migrations in ``egress/store/migrations`` (a unit test
checks that autogenerate finds no difference between these models and the migrations).

Times are stored as UTC (:class:`UTCDateTime`: ``timestamp with time zone`` on PostgreSQL, an
ISO-8601 text on SQLite) and always come back as timezone-aware UTC datetimes.

What the tables hold
    ``requests``: one release request (id is a short random url-safe string).
    ``file_groups``: a request's named groups of files, each with its context and controls text.
    ``request_files``: the files of a request: path in the project's outputs folder, sha256 of
    the snapshot taken when it was added, ``release_sha256`` of the bytes that would leave
    (after CSV neutralisation or SVG sanitisation), the automatic checks as JSON.
    ``votes``: one reviewer's vote on one file in one review round.
    ``viewed_files``: a checker's "viewed" tick on one file, for the version (``release_sha256``)
    they ticked: a file changed since then shows unticked. A checker's own working note: not
    audited (the views themselves are, as ``FILE_VIEWED``) and seen by that checker only.
    ``reviews``: one reviewer's submitted review of one round.
    ``comments``: public (author and checkers) or private (checkers only) comments.
    ``audit_events``: the hash-chained audit log; ``line`` is the canonical
    ``AuditEvent.to_line()`` text (what is verified), the other columns are copies for queries.
    ``audit_log``: one row: the log's id and its head (seq, hash). Every write transaction locks
    this row first, which serialises writers on PostgreSQL (SQLite serialises them with
    ``BEGIN IMMEDIATE``); verification also checks the head still matches the last event.
    ``releases``: the signed release record of a released request.
    ``notifications_outbox``: e-mails to send, written in the same transaction as the event
    that causes them, sent later by ``EgressService.deliver_notifications``.
    ``idempotency_keys``: the first answer (status, content type, location, body) the API or a
    form gave to a write sent with an ``Idempotency-Key``, per actor and key, with the hash of
    the request it answered; a retry with the same key gets it again (24 hours).
    ``reexecutions``: trusted re-executions of a request's notebook (id: the runner's job id),
    ``queued`` until the runner's result is taken in; then its report (outputs with sha256 and
    SDC metadata, no bytes: those are in the content store) and the service's signed record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AuditEventRow",
    "AuditLogRow",
    "Base",
    "Comment",
    "FileGroup",
    "IdempotencyKey",
    "Notification",
    "Reexecution",
    "Release",
    "Request",
    "RequestFile",
    "Review",
    "UTCDateTime",
    "ViewedFile",
    "Vote",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

REQUEST_ID_LENGTH = 16
USERNAME_LENGTH = 64
PROJECT_LENGTH = 32
STATE_LENGTH = 20
SHA256_LENGTH = 64


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every database (naive datetimes are refused)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("times must be timezone-aware (UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Request(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), primary_key=True)
    project: Mapped[str] = mapped_column(String(PROJECT_LENGTH), index=True)
    author: Mapped[str] = mapped_column(String(USERNAME_LENGTH), index=True)
    title: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(STATE_LENGTH), index=True)
    reviews_required: Mapped[int] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]

    groups: Mapped[list[FileGroup]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="FileGroup.name"
    )
    files: Mapped[list[RequestFile]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="RequestFile.path"
    )


class FileGroup(Base):
    __tablename__ = "file_groups"
    __table_args__ = (UniqueConstraint("request_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    context: Mapped[str] = mapped_column(Text, default="")
    controls: Mapped[str] = mapped_column(Text, default="")

    request: Mapped[Request] = relationship(back_populates="groups")


class RequestFile(Base):
    __tablename__ = "request_files"
    __table_args__ = (UniqueConstraint("request_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    group: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    release_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    release_size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    check: Mapped[dict[str, Any]]
    added_at: Mapped[datetime]
    changed_in_round: Mapped[int] = mapped_column(Integer)

    request: Mapped[Request] = relationship(back_populates="files")


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("file_id", "reviewer", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    file_id: Mapped[int] = mapped_column(ForeignKey("request_files.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    round: Mapped[int] = mapped_column(Integer)
    vote: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime]


class ViewedFile(Base):
    __tablename__ = "viewed_files"

    file_id: Mapped[int] = mapped_column(
        ForeignKey("request_files.id", ondelete="CASCADE"), primary_key=True
    )
    checker: Mapped[str] = mapped_column(String(USERNAME_LENGTH), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    release_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    viewed_at: Mapped[datetime]


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("request_id", "reviewer", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    round: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[datetime]


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    file_id: Mapped[int | None] = mapped_column(ForeignKey("request_files.id", ondelete="SET NULL"))
    author: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    visibility: Mapped[str] = mapped_column(String(10))
    round: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    #: Written while the request was being reviewed (a checker's comment of that round).
    during_review: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEventRow(Base):
    """One audit event. ``line`` is what is verified; the other columns are query copies."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    line: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    project: Mapped[str | None] = mapped_column(String(PROJECT_LENGTH))
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH), index=True)
    time: Mapped[str] = mapped_column(String(27))


class AuditLogRow(Base):
    """The audit log's id and head: one row (id 1), locked by every write transaction."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    log_id: Mapped[str] = mapped_column(String(100))
    head_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    created_at: Mapped[datetime]


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="RESTRICT"), unique=True
    )
    released_at: Mapped[datetime]
    released_by: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    record_json: Mapped[str] = mapped_column(Text)


class Notification(Base):
    __tablename__ = "notifications_outbox"
    __table_args__ = (Index("ix_notifications_outbox_pending", "sent_at", "attempts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(32))
    to: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class Reexecution(Base):
    __tablename__ = "reexecutions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    notebook_path: Mapped[str] = mapped_column(Text)
    notebook_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    parameters: Mapped[dict[str, Any]]
    requested_by: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    requested_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))
    finished_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    record_json: Mapped[str | None] = mapped_column(Text)


IDEMPOTENCY_KEY_LENGTH = 128


class IdempotencyKey(Base):
    """One write sent with an ``Idempotency-Key`` and its first answer (``status`` 0: running)."""

    __tablename__ = "idempotency_keys"

    actor: Mapped[str] = mapped_column(String(USERNAME_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100), default="")
    location: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(index=True)
