"""The egress service's core: every operation on a release request happens here, and only here.

The web layer (``egress.service``) and the admin command line (``egress.cli``) are thin shells
around :class:`EgressService`. Each operation

1. takes an :class:`~egress.domain.policy.Actor` (built from the hub user with :func:`actor_for`);
2. runs in **one database transaction** that first locks the audit log
   (``egress.audit.db_log.lock``: ``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on
   PostgreSQL), so that everything it reads is current and no other writer interleaves;
3. asks ``egress.domain.policy.require`` whether the actor may do it now (403/409 with the policy's
   sentence otherwise) and ``egress.domain.workflow.next_state`` where the request goes;
4. writes its changes **and** its audit event(s) **and** any notification e-mails to the outbox
   in that same transaction: the audit log and the data can never disagree, whatever crashes.

Refused operations (403, 409, and 400/404/422 from this module) change nothing and are **not**
written to the audit log: the log records what happened to requests, and a refused attempt
happened to nothing. They are logged by the service's ordinary logger (``egress.core``, level
INFO) with the actor, the operation, the request and the reason.

Files
    ``add_file`` reads the file from the project's outputs folder (``havre.enclave.outputs_folder``,
    never following links), runs the automatic checks (``egress.file_checks.check_file``) and,
    for a CSV/TSV table of numbers, the SDC count-table rules, set against the researcher's
    library's record of that exact file (``egress.sdc_badge``: no count pass unless the record
    for these bytes says counts; changed files and relaxed parameters flagged; compared again
    on submission); it refuses failing files (422, with every reason).
    The snapshot (and the neutralised/sanitised version, when it differs) goes into the
    content store *before* the transaction; if the transaction then fails, the blob is an
    unreferenced leftover, never a reference to something missing. Reviewers see, and the
    release contains, exactly the ``release_sha256`` blob. The SDC verdict informs the
    checkers; it does not refuse a file (humans decide).

    Adding a file whose path is already in the request replaces it: if its bytes changed, its
    votes start again (``workflow.votes_after_file_change``) when the request is resubmitted.
    Removing a file deletes its votes.

Rounds
    A request starts in round 1. Resubmitting a returned request starts the next round: every
    file's votes of the last round are carried over with ``workflow.votes_after_resubmit``
    (approvals stay, requests for changes become undecided), except for files whose bytes
    changed, which get ``workflow.votes_after_file_change`` (all undecided). Every reviewer must
    submit a review again. The number of reviews required is read from
    ``enclave.review.reviews_required`` each time the request is submitted.

Verification
    :meth:`EgressService.verify_audit` runs :func:`egress.audit.replay.verify_database` (the
    chain, the checkpoints, then the log replayed against the tables).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import logging
import math
import re
import secrets
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from egress.audit import db_log as audit_log
from egress.audit.chain import (
    AuditEvent,
    Checkpoint,
    EventType,
    VerifyReport,
    append_checkpoint,
    canonical_json,
    format_time,
)
from egress.audit.replay import (
    export_database_audit,
    failed_report,
    missing_release_checkpoints,
    reconcile_checkpoints,
    sha256_text,
    verify_database,
)
from egress.content_store import ContentStore
from egress.domain import policy
from egress.domain.policy import Actor, Permission, PermissionDenied, RequestView
from egress.domain.workflow import (
    INDEPENDENT_REVIEW_STATES,
    REVIEW_STATES,
    Action,
    Party,
    RequestState,
    Vote,
    file_decision,
    next_state,
    turn_of,
    votes_after_file_change,
    votes_after_resubmit,
)
from egress.errors import (
    EgressError,
    FileRefused,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    _refused,
)
from egress.file_checks import DEFAULT_POLICY, CheckPolicy, FileCheckResult, FileKind, check_file
from egress.reexecution import service as reexecution_service
from egress.reexecution.jobs import JobsFolder
from egress.sdc_badge import LibraryReadError, LibraryRecords, combine, view_check
from egress.signing import (
    key_id,
    load_private_key,
    load_public_key,
    public_key_path,
    release_record,
    sign_record,
)
from egress.store.db import current_revision, head_revision, read_session, write_session
from egress.store.models import (
    AuditEventRow,
    AuditLogRow,
    Comment,
    FileGroup,
    IdempotencyKey,
    Notification,
    Release,
    Request,
    RequestFile,
    Review,
)
from egress.store.models import Vote as VoteRow
from havre.enclave.config import ADMINS_HUB_GROUP, EnclaveConfig
from havre.enclave.identities import IdentityError, owners_of, table_path
from havre.enclave.outputs_folder import (
    OutputPathError,
    read_output,
    read_output_owned,
    scan_outputs,
)
from havre.sdc import SDCParams, check_frequency_csv, read_table_csv
from havre.sdc.differencing import count_table_from_csv, differencing_warnings

__all__ = [
    "EgressError",
    "EgressService",
    "FileContent",
    "FileRefused",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InvalidInput",
    "NotFound",
    "OutboxMessage",
    "ServicePaths",
    "StoredAnswer",
    "actor_for",
    "member_check",
    "export_database_audit",
    "missing_release_checkpoints",
    "reconcile_checkpoints",
    "verify_database",
]

log = logging.getLogger("egress.core")

MAX_TITLE = 200
MAX_GROUP_NAME = 100
MAX_COMMENT = 10_000
MAX_CONTEXT = 20_000
DEFAULT_GROUP = "default"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_STATE_EVENTS = {
    Action.SUBMIT: EventType.SUBMITTED,
    Action.WITHDRAW: EventType.WITHDRAWN,
    Action.RETURN: EventType.RETURNED,
    Action.APPROVE: EventType.APPROVED,
    Action.REJECT: EventType.REJECTED,
    Action.RELEASE: EventType.RELEASED,
    Action.REVOKE: EventType.REVOKED,
}
MEDIA_TYPES = {
    FileKind.CSV: "text/csv; charset=utf-8",
    FileKind.TSV: "text/tab-separated-values; charset=utf-8",
    FileKind.PNG: "image/png",
    FileKind.JPEG: "image/jpeg",
    FileKind.SVG: "image/svg+xml",
    FileKind.PDF: "application/pdf",
    FileKind.TEXT: "text/plain; charset=utf-8",
    FileKind.MARKDOWN: "text/markdown; charset=utf-8",
    FileKind.NOTEBOOK: "application/x-ipynb+json",
}


# --------------------------------------------------------------------------------------------
# Errors and small value types


#: The largest row id accepted in input (beyond any real one; fits every database's integers).
MAX_ID = 999_999_999_999
#: A recipient meaning "every output checker at delivery time, except the user named after it".
CHECKERS_MARKER = "@output-checkers-except:"


#: How long the first answer to a write with an ``Idempotency-Key`` is kept for its retries.
IDEMPOTENCY_TTL = timedelta(hours=24)
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,128}")


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer to a write sent with an ``Idempotency-Key``: given again to retries."""

    status: int
    content_type: str
    location: str
    body: str


@dataclass(frozen=True)
class FileContent:
    """Bytes of a file of a request, with what a viewer or a download needs to know."""

    file_id: int
    path: str
    data: bytes = field(repr=False)
    sha256: str
    size: int
    kind: str
    media_type: str
    snapshot_sha256: str


@dataclass(frozen=True)
class OutboxMessage:
    """A notification to send: ``to`` are usernames (the sender resolves their addresses)."""

    id: int
    event: str
    to: tuple[str, ...]
    subject: str
    body: str
    created_at: datetime
    attempts: int


@dataclass(frozen=True)
class ServicePaths:
    """Where the egress service keeps its state under the enclave's state directory."""

    state_dir: Path

    @property
    def egress_dir(self) -> Path:
        return Path(self.state_dir) / "egress"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.egress_dir / 'egress.db'}"

    @property
    def content_dir(self) -> Path:
        return self.egress_dir / "content"

    @property
    def signing_key(self) -> Path:
        return self.egress_dir / "signing-key.pem"

    @property
    def checkpoints(self) -> Path:
        return self.egress_dir / "audit-checkpoints.jsonl"


def actor_for(enclave: EnclaveConfig, name: str, hub_groups: Iterable[str] = ()) -> Actor:
    """The policy's :class:`Actor` for hub user ``name`` with ``hub_groups``.

    Projects and the checker role come from the enclave config (listed members and checkers, or
    the hub groups Havre manages); administrators are the members of the ``hub-admins`` group.
    """
    groups = list(hub_groups)
    return Actor(
        username=name,
        projects=frozenset(p.slug for p in enclave.projects_of(name, groups)),
        is_checker=enclave.is_checker(name, groups),
        is_admin=ADMINS_HUB_GROUP in groups,
    )


_ID_ALPHABET = string.ascii_letters + string.digits


def new_request_id() -> str:
    """A random request id: 12 letters and digits (71 bits; never starts with ``-``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _now_utc() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else format_time(when)


#: the columns of a request that its summary shows (see ``EgressService._summary``)
_SUMMARY_COLUMNS = (
    "id",
    "project",
    "author",
    "title",
    "state",
    "round",
    "reviews_required",
    "created_at",
    "updated_at",
    "submitted_at",
)


def page_cursor(summary: Mapping[str, Any]) -> str:
    """The opaque position after ``summary`` in the requests list (its ``after`` argument)."""
    raw = json.dumps([summary["updated_at"], summary["id"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated, request_id = json.loads(raw)
        when = datetime.fromisoformat(updated)
        if when.tzinfo is None or not isinstance(request_id, str):
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidInput(
            "after is not a position in the requests list; use the `next` link of a page."
        ) from None
    return when, request_id


def _clean_text(value: object, what: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text.")
    text = value.strip()
    if not text and not allow_empty:
        raise InvalidInput(f"{what} can't be empty.")
    if len(text) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters.")
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character.")
    return text


def _group_name(value: object) -> str:
    name = _clean_text(value, "The group name", MAX_GROUP_NAME)
    if not name.isprintable():
        raise InvalidInput("The group name contains invisible or control characters.")
    return name


def _request_id(value: object) -> str:
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value):
        raise NotFound(f"There is no release request {value!r}.")
    return value


def _file_id(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise NotFound(f"There is no file {value!r} in this request.") from None
    if isinstance(value, bool) or not 1 <= number <= MAX_ID:
        raise NotFound(f"There is no file {str(value)[:40]!r} in this request.")
    return number


def _versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# --------------------------------------------------------------------------------------------
# SDC check of CSV/TSV tables of counts


def _count_check_function() -> Callable[..., Any] | None:
    """``havre.sdc.published.check_count_csv_text`` when this version of the rules has it."""
    try:
        from havre.sdc.published import check_count_csv_text
    except ImportError:
        return None
    return check_count_csv_text


def _frequency_table_check(result: FileCheckResult, params: SDCParams) -> dict[str, Any] | None:
    """The count-table rules' verdict for a CSV/TSV of numbers; ``None`` for other files.

    A table of numbers: a first column of labels, then only non-negative whole numbers (blank
    cells are taken as suppressed). Anything else is recorded as not checked, with the reason.
    This reads every number as a count: whether the table *holds* counts is decided with the
    library's record (:func:`egress.sdc_badge.combine`), never here.
    """
    if result.kind not in (FileKind.CSV, FileKind.TSV) or result.release_bytes is None:
        return None
    delimiter = "\t" if result.kind is FileKind.TSV else ","
    text = result.release_bytes.decode("utf-8-sig")
    not_checked = {
        "checked": False,
        "reason": "not a table of counts (labels in the first column and header row, then "
        "whole numbers); only tables of counts are checked automatically",
    }
    fast = _count_check_function()
    if fast is not None:
        try:
            outcome = fast(text, delimiter=delimiter, params=params)
        except Exception as exc:  # the verdict informs checkers; its failure must not block
            log.exception("the SDC check of %s failed", result.name)
            return {"checked": False, "reason": f"the automatic SDC check failed: {exc}"}
        if outcome is None:
            return not_checked
        return _count_record(outcome)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        return not_checked
    numbers = 0
    for row in rows[1:]:
        for cell in row[1:]:
            cell = cell.strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                return not_checked
            if not math.isfinite(value) or value < 0 or value != int(value):
                return not_checked
            numbers += 1
    if not numbers:
        return not_checked
    try:
        frame = read_table_csv(text, delimiter=delimiter)
        outcome = check_frequency_csv(frame, params=params)
    except Exception as exc:  # the verdict informs checkers; its failure must not block a file
        log.exception("the SDC check of %s failed", result.name)
        return {"checked": False, "reason": f"the automatic SDC check failed: {exc}"}
    return _count_record(outcome)


def _count_record(outcome: Any) -> dict[str, Any]:
    record = outcome.as_record()
    record.pop("sdc", None)  # per-cell positions: recomputed when a checker needs them
    record["reasons"] = record["reasons"][:200]
    return {"checked": True, **record}


#: The largest ``results.json`` (or checksum file) read to find the library's record.
LIBRARY_RECORD_MAX_BYTES = 64 * 1024 * 1024


def _library_reader(root: Path) -> Callable[[str], bytes | None]:
    """Reads a file of the outputs folder for :class:`egress.sdc_badge.LibraryRecords`."""

    def read(relative: str) -> bytes | None:
        try:
            return read_output(root, relative, max_bytes=LIBRARY_RECORD_MAX_BYTES)
        except OutputPathError as exc:
            if "does not exist" in exc.reason:
                return None
            raise LibraryReadError(exc.reason) from None

    return read


def _raw_count_check(sdc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The count-table rules' record behind a stored ``sdc`` (before the badge capped it)."""
    if not sdc or not sdc.get("checked") or not isinstance(sdc.get("count_rules"), dict):
        return dict(sdc) if sdc else None
    rules = sdc["count_rules"]
    raw = {k: v for k, v in sdc.items() if k != "count_rules"}
    raw.update(
        verdict=rules.get("verdict"),
        summary=rules.get("summary"),
        reasons=list(rules.get("reasons") or []),
        statistic="count",
    )
    return raw


def _table_shape(data: bytes, kind: str) -> dict[str, int]:
    """Rows (the header included) and the widest row's columns of a CSV/TSV snapshot."""
    delimiter = "\t" if kind == FileKind.TSV.value else ","
    text = data.decode("utf-8-sig", errors="replace")
    rows = columns = 0
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        if any(cell.strip() for cell in row):
            rows += 1
            columns = max(columns, len(row))
    return {"rows": rows, "columns": columns}


#: The parts of a file's stored check that a project member sees (see :func:`member_check`).
MEMBER_SDC_KEYS = ("checked", "verdict", "kind", "statistic", "rule_counts", "params")
MEMBER_LIBRARY_KEYS = ("status", "statistic", "verdict", "label", "uid", "params", "message")
MEMBER_BADGE_KEYS = (
    "version",
    "verdict",
    "text",
    "verified_by",
    "count_rules_verdict",
    "statistic",
    "statistic_source",
    "params",
    "library_status",
)


def member_check(check: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A file's check as project members (the author included) and administrators see it.

    Verdicts and counts only: the flagged cells' text, the lines naming changed cells, the
    warnings (a PNG's chunk names are the researcher's bytes), the SDC rules' per-cell
    findings and reasons (they quote a table's labels) are left out; checkers see them all.
    The library's reasons, the researcher's exception text and the badge's sentences are left
    out too: they come from ``results.json`` in the outputs folder, which a researcher can
    write by hand. ``redacted`` says that this is the members' view.
    """
    if not check:
        return None if check is None else dict(check)
    sdc = check.get("sdc")
    out: dict[str, Any] = {
        "outcome": check.get("outcome"),
        "warnings": [],
        "changes": [],
        "flagged_cells": [],
        "flagged_cell_count": check.get("flagged_cell_count", 0),
        "warning_count": len(check.get("warnings") or []),
        "change_count": len(check.get("changes") or []),
        "sdc": None,
        "library": None,
        "badge": None,
        "redacted": True,
        "owner": check.get("owner"),
    }
    if isinstance(sdc, Mapping):
        kept = {k: sdc[k] for k in MEMBER_SDC_KEYS if k in sdc}
        if not sdc.get("checked") and isinstance(sdc.get("reason"), str):
            kept["reason"] = sdc["reason"]  # why it was not checked: the service's sentence
        if isinstance(sdc.get("count_rules"), Mapping):
            kept["count_rules"] = {"verdict": sdc["count_rules"].get("verdict")}
        kept["finding_count"] = len(sdc.get("findings") or [])
        kept["reason_count"] = len(sdc.get("reasons") or [])
        out["sdc"] = kept
    library = check.get("library")
    if isinstance(library, Mapping):
        out["library"] = {k: library[k] for k in MEMBER_LIBRARY_KEYS if k in library}
    badge = check.get("badge")
    if isinstance(badge, Mapping):
        out["badge"] = {k: badge[k] for k in MEMBER_BADGE_KEYS if k in badge}
        if isinstance(sdc, Mapping) and isinstance(sdc.get("count_rules"), Mapping):
            out["badge"]["summary"] = sdc["count_rules"].get("summary") or ""
        else:
            out["badge"]["summary"] = ""
    return out


def _check_json(
    result: FileCheckResult,
    sdc: dict[str, Any] | None,
    library: dict[str, Any] | None = None,
    badge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "outcome": result.outcome,
        "warnings": list(result.warnings),
        "changes": list(result.changes),
        "flagged_cells": [dataclasses.asdict(c) for c in result.flagged_cells[:100]],
        "flagged_cell_count": len(result.flagged_cells),
        "sdc": sdc,
        "library": library,
        "badge": badge,
    }


# --------------------------------------------------------------------------------------------
# Transactions


class Transaction:
    """One write transaction: its session, the locked audit log, its time, what it queued."""

    def __init__(self, session: Session, log_row: AuditLogRow, now: datetime) -> None:
        self.session = session
        self.log_row = log_row
        self.now = now
        self.events: list[AuditEvent] = []
        self.notified = False

    def audit(
        self,
        actor: Actor | str,
        event: EventType,
        request: Request | None = None,
        *,
        object: str | None = None,
        file_hashes: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        ev = audit_log.append(
            self.session,
            self.log_row,
            actor=actor if isinstance(actor, str) else actor.username,
            event=event,
            time=self.now,
            project=request.project if request is not None else None,
            request_id=request.id if request is not None else None,
            object=object,
            file_hashes=file_hashes,
            details=details,
        )
        self.events.append(ev)
        return ev

    def notify(self, event: str, to: Iterable[str], subject: str, body: str) -> None:
        recipients = sorted(set(to))
        if not recipients:
            return
        self.session.add(
            Notification(
                event=event,
                to=json.dumps(recipients),
                subject=subject,
                body=body,
                created_at=self.now,
                sent_at=None,
                attempts=0,
                last_error=None,
            )
        )
        self.notified = True


# --------------------------------------------------------------------------------------------
# The service


class EgressService:
    """Every operation of the egress service (see the module documentation).

    ``engine``: a migrated database (``egress.store.db.make_engine`` + ``migrate``).
    ``content``: the content store of snapshots. ``enclave``: the enclave config (projects,
    members, checkers, reviews required). ``outputs_root``: project slug -> its outputs folder
    (default: ``enclave.outputs_dir``). ``signing_key_path``: the Ed25519 private key that signs
    release records (``egress.signing.generate_key``); loaded when first needed.
    ``clock``: returns an aware UTC datetime (tests pass a fake). ``notifier``: called with no
    arguments after a transaction that queued notifications commits (e.g. to wake the sender);
    its failures are logged and ignored. ``checkpoint_path``: a JSON-lines file outside the
    database where the audit head is appended after each release (and read by
    :meth:`verify_audit`). ``service_url``: the service's public URL, for links in e-mails.
    """

    def __init__(
        self,
        engine: Engine,
        content: ContentStore,
        enclave: EnclaveConfig,
        *,
        outputs_root: Callable[[str], Path] | None = None,
        signing_key_path: str | Path | None = None,
        clock: Callable[[], datetime] = _now_utc,
        notifier: Callable[[], None] | None = None,
        sdc_params: SDCParams | None = None,
        check_policy: CheckPolicy = DEFAULT_POLICY,
        checkpoint_path: str | Path | None = None,
        service_url: str = "",
        strict_key_permissions: bool = True,
        check_schema: bool = True,
    ) -> None:
        self.engine = engine
        self.content = content
        self.enclave = enclave
        self.outputs_root = outputs_root or enclave.outputs_dir
        self.signing_key_path = Path(signing_key_path) if signing_key_path else None
        self._clock = clock
        self._notifier = notifier
        self.sdc_params = sdc_params or SDCParams()
        self.check_policy = check_policy
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.service_url = service_url.rstrip("/")
        self._strict_key = strict_key_permissions
        self._private_key: Ed25519PrivateKey | None = None
        if check_schema:
            have, want = current_revision(engine), head_revision()
            if have != want:
                raise RuntimeError(
                    f"the egress database schema is at revision {have}, not {want}: run "
                    "`havre-egress-admin migrate` first"
                )
        self.log_id = audit_log.ensure_log(engine, self.now, details={"enclave": enclave.name})

    # -- building blocks (public: egress.reexecution.service composes its operations of them) --

    def now(self) -> datetime:
        """The service clock's time, in UTC (the clock must be timezone-aware)."""
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    @contextmanager
    def writing(
        self, op: str, actor: Actor, request_id: str | None = None
    ) -> Iterator[Transaction]:
        """One write transaction holding the audit-log lock; refusals are logged as ``op``."""
        tx: Transaction | None = None
        try:
            with write_session(self.engine) as session:
                log_row = audit_log.lock(session)
                tx = Transaction(session, log_row, self.now())
                yield tx
        except (PermissionDenied, EgressError) as exc:
            _refused(op, actor, request_id, exc)
            raise
        if tx is not None and tx.notified and self._notifier is not None:
            try:
                self._notifier()
            except Exception:  # never let a notifier break the workflow
                log.exception("the notifier callback failed")

    @contextmanager
    def reading(self, op: str, actor: Actor, request_id: str | None = None) -> Iterator[Session]:
        """One read-only session; refusals are logged as ``op``."""
        try:
            with read_session(self.engine) as session:
                yield session
        except (PermissionDenied, EgressError) as exc:
            _refused(op, actor, request_id, exc)
            raise

    def private_key(self) -> Ed25519PrivateKey:
        """The release-signing key (loaded once; an error if none is configured)."""
        if self._private_key is None:
            if self.signing_key_path is None:
                raise EgressError("No signing key is configured; releases can't be signed.")
            self._private_key = load_private_key(
                self.signing_key_path, strict_permissions=self._strict_key
            )
        return self._private_key

    def public_key(self) -> Ed25519PublicKey | None:
        """The public key that checks release records (``None`` if no key is configured)."""
        if self.signing_key_path is None:
            return None
        pub = Path(public_key_path(self.signing_key_path))
        if pub.exists():
            return load_public_key(pub)
        return self.private_key().public_key()

    @staticmethod
    def load_request(session: Session, request_id: object) -> Request:
        """The request ``request_id`` (404 if there is none)."""
        request = session.get(Request, _request_id(request_id))
        if request is None:
            raise NotFound(f"There is no release request {request_id!r}.")
        return request

    @staticmethod
    def request_file(session: Session, request: Request, file_id: object) -> RequestFile:
        """The file ``file_id`` of ``request`` (404 if it is not one of its files)."""
        row = session.get(RequestFile, _file_id(file_id))
        if row is None or row.request_id != request.id:
            raise NotFound(f"There is no file {file_id!r} in request {request.id}.")
        return row

    @staticmethod
    def _votes(session: Session, request: Request, round_: int) -> dict[int, dict[str, Vote]]:
        votes: dict[int, dict[str, Vote]] = {}
        for file_id, reviewer, vote in session.execute(
            select(VoteRow.file_id, VoteRow.reviewer, VoteRow.vote).where(
                VoteRow.request_id == request.id, VoteRow.round == round_
            )
        ):
            votes.setdefault(file_id, {})[reviewer] = Vote(vote)
        return votes

    @staticmethod
    def _reviewers(session: Session, request: Request) -> list[str]:
        return list(
            session.execute(
                select(Review.reviewer)
                .where(Review.request_id == request.id, Review.round == request.round)
                .order_by(Review.submitted_at, Review.id)
            ).scalars()
        )

    def _files(self, session: Session, request: Request) -> list[RequestFile]:
        return list(
            session.execute(
                select(RequestFile)
                .where(RequestFile.request_id == request.id)
                .order_by(RequestFile.path)
            ).scalars()
        )

    def _groups(self, session: Session, request: Request) -> list[FileGroup]:
        return list(
            session.execute(
                select(FileGroup).where(FileGroup.request_id == request.id).order_by(FileGroup.name)
            ).scalars()
        )

    def _view(
        self,
        session: Session,
        request: Request,
        files: list[RequestFile] | None = None,
        groups: list[FileGroup] | None = None,
    ) -> RequestView:
        """What the policy needs to know of ``request`` (``files``/``groups``: already read)."""
        files = self._files(session, request) if files is None else files
        groups = self._groups(session, request) if groups is None else groups
        votes = self._votes(session, request, request.round)
        used = {f.group for f in files}
        missing = {
            g.name
            for g in groups
            if g.name in used and not (g.context.strip() and g.controls.strip())
        }
        return RequestView(
            id=request.id,
            project=request.project,
            author=request.author,
            state=RequestState(request.state),
            reviews_required=request.reviews_required,
            reviewers_who_submitted=frozenset(self._reviewers(session, request)),
            files={f.path: votes.get(f.id, {}) for f in files},
            groups_missing_context=frozenset(missing),
            submitted=request.submitted_at is not None,
        )

    def require(
        self,
        session: Session,
        actor: Actor,
        permission: Permission,
        request: Request,
        **already_read: Any,
    ) -> RequestView:
        """The request's view, if ``actor`` may do ``permission`` on it now (403/409 if not)."""
        view = self._view(session, request, **already_read)
        policy.require(actor, permission, view)
        return view

    @staticmethod
    def _move(
        tx: Transaction, request: Request, action: Action, **counts: int
    ) -> tuple[RequestState, RequestState]:
        before = RequestState(request.state)
        after = next_state(before, action, **counts)
        request.state = after.value
        request.updated_at = tx.now
        return before, after

    def _checkers_to_notify(self, request: Request) -> list[str]:
        """The checkers listed in the config, and a marker the mailer expands at delivery time
        into everyone then in the checkers' hub group (never the author): asking the hub
        inside this transaction would hold the database lock on a network call."""
        listed = sorted(self.enclave.output_checkers - {request.author})
        return [*listed, f"{CHECKERS_MARKER}{request.author}"]

    def _link(self, request: Request) -> str:
        if not self.service_url:
            return ""
        return f"\n\n{self.service_url}/requests/{request.id}\n"

    def _notify(
        self, tx: Transaction, request: Request, event: str, to: Iterable[str], what: str
    ) -> None:
        # E-mails leave the enclave: ids and states only, never titles, file names or comments.
        tx.notify(
            event,
            to,
            f"[Havre] Release request {request.id} ({request.project}) {what}",
            f"Release request {request.id} in project {request.project} {what}."
            f"{self._link(request)}\n-- Havre egress service\n",
        )

    # -- idempotency keys (issue #13: a retried write returns the first answer) ---------------

    def idempotency_begin(self, actor: Actor, key: str, fingerprint: str) -> StoredAnswer | None:
        """Start a write sent with ``key``: ``None`` when it is new (the key is now reserved:
        call :meth:`idempotency_finish` or :meth:`idempotency_abandon`), else the first answer.

        Keys are per actor and kept :data:`IDEMPOTENCY_TTL`; ``fingerprint`` (a hash of the
        method, address and body) must be the first request's, or :class:`IdempotencyKeyReused`
        (422). A retry while the first is still running gets :class:`IdempotencyInProgress`.
        """
        if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidInput(
                "The Idempotency-Key must be 8 to 128 letters, digits or the characters - _ . :"
            )
        with self.writing("idempotency_begin", actor) as tx:
            tx.session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < tx.now - IDEMPOTENCY_TTL)
            )
            row = tx.session.get(IdempotencyKey, (actor.username, key))
            if row is None:
                tx.session.add(
                    IdempotencyKey(
                        actor=actor.username,
                        key=key,
                        fingerprint=fingerprint,
                        status=0,
                        content_type="",
                        location="",
                        body="",
                        created_at=tx.now,
                    )
                )
                return None
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different request; send a new "
                    "key with a new request (a retry sends the very same request and key)."
                )
            if row.status == 0:
                raise IdempotencyInProgress(
                    "The first request with this Idempotency-Key is still being processed; "
                    "retry in a moment."
                )
            return StoredAnswer(row.status, row.content_type, row.location, row.body)

    def idempotency_finish(self, actor: Actor, key: str, answer: StoredAnswer) -> None:
        """Keep ``answer`` as the one every retry with ``key`` gets."""
        with self.writing("idempotency_finish", actor) as tx:
            row = tx.session.get(IdempotencyKey, (actor.username, key))
            if row is not None:
                row.status, row.content_type = answer.status, answer.content_type[:100]
                row.location, row.body = answer.location, answer.body

    def idempotency_abandon(self, actor: Actor, key: str) -> None:
        """Free a reserved key whose write failed unexpectedly, so that a retry runs it."""
        with self.writing("idempotency_abandon", actor) as tx:
            tx.session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.actor == actor.username,
                    IdempotencyKey.key == key,
                    IdempotencyKey.status == 0,
                )
            )

    # -- requests ------------------------------------------------------------------------------

    def create_request(self, actor: Actor, project: str, title: str) -> dict[str, Any]:
        """Start a draft request in ``project``; returns its summary (see :meth:`list_requests`)."""
        with self.writing("create_request", actor) as tx:
            draft = RequestView(id="-", project=project, author=actor.username, state="draft")
            policy.require(actor, Permission.CREATE, draft)
            if project not in self.enclave.projects:
                raise NotFound(f"There is no project {project!r}.")
            title = _clean_text(title, "The title", MAX_TITLE)
            request = Request(
                id=new_request_id(),
                project=project,
                author=actor.username,
                title=title,
                state=RequestState.DRAFT.value,
                reviews_required=self.enclave.review.reviews_required,
                round=1,
                created_at=tx.now,
                updated_at=tx.now,
                submitted_at=None,
            )
            tx.session.add(request)
            tx.session.flush()
            tx.audit(
                actor,
                EventType.REQUEST_CREATED,
                request,
                details={
                    "title": title,
                    "state": request.state,
                    "round": request.round,
                    "reviews_required": request.reviews_required,
                },
            )
            return self._summary(tx.session, request)

    def _file_owner(self, uid: int) -> dict[str, Any]:
        """Who wrote a file: its uid and, for a server's uid, the member's name.

        The names come from the identity table the hub keeps (havre/enclave/identities.py,
        mounted read-only here); ``user`` is None for a uid that is no server's (a file made
        before per-server identities, uid 1000, or by an administrator).
        """
        try:
            owners = owners_of(table_path(Path(self.enclave.state_dir)))
        except (OSError, IdentityError) as exc:
            log.warning("Can't read the identity table: %s", exc)
            owners = {}
        return {"uid": uid, "user": owners.get(uid)}

    def list_outputs(self, actor: Actor, project: str) -> dict[str, Any]:
        """The files a member can add from ``project``'s outputs folder, and what is skipped.

        ``{"files": [{"path", "size", "mtime"}], "skipped": [{"path", "reason"}]}``.
        """
        decision = policy.check_create(actor, project)
        if not decision.allowed:
            exc = PermissionDenied(decision.reason, decision.status)
            _refused("list_outputs", actor, None, exc)
            raise exc
        try:
            listing = scan_outputs(self.outputs_root(project))
        except OutputPathError as exc:
            raise EgressError(exc.reason) from None
        return {
            "files": [{"path": e.path, "size": e.size, "mtime": e.mtime} for e in listing.entries],
            "skipped": [{"path": s.path, "reason": s.reason} for s in listing.skipped],
        }

    def add_file(
        self, actor: Actor, request_id: str, path: str, group: str = DEFAULT_GROUP
    ) -> dict[str, Any]:
        """Snapshot ``path`` from the outputs folder into the request, in ``group``.

        Refused with :class:`FileRefused` (422) when the checks fail. Returns the file's entry
        (as in :meth:`get_request`) plus ``replaced`` and ``content_changed``.
        """
        with self.reading("add_file", actor, request_id) as session:
            request = self.load_request(session, request_id)
            self.require(session, actor, Permission.ADD_FILE, request)
            project = request.project
        try:
            group = _group_name(group)
        except InvalidInput as exc:
            _refused("add_file", actor, request_id, exc)
            raise
        try:
            data, owner_uid = read_output_owned(
                self.outputs_root(project), path, max_bytes=self.check_policy.max_file_bytes
            )
        except OutputPathError as exc:
            refusal = FileRefused(str(path), [exc.reason])
            _refused("add_file", actor, request_id, refusal)
            raise refusal from None
        result = check_file(path, data, self.check_policy)
        if not result.ok or result.release_bytes is None or result.release_sha256 is None:
            refusal = FileRefused(path, result.problems, result.warnings)
            _refused("add_file", actor, request_id, refusal)
            raise refusal
        count = _frequency_table_check(result, self.sdc_params)
        library = self.library_records(project).for_file(path, result.sha256)
        sdc, badge = combine(count, library, self.sdc_params)
        self.content.put(data)
        if result.changed:
            self.content.put(result.release_bytes)
        with self.writing("add_file", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.ADD_FILE, request)
            target_round = (
                request.round if request.state == RequestState.DRAFT else request.round + 1
            )
            row = tx.session.execute(
                select(RequestFile).where(
                    RequestFile.request_id == request.id, RequestFile.path == path
                )
            ).scalar_one_or_none()
            replaced = row is not None
            changed = row is None or row.release_sha256 != result.release_sha256
            if row is None:
                row = RequestFile(request_id=request.id, path=path)
                tx.session.add(row)
            row.group = group
            row.sha256 = result.sha256
            row.release_sha256 = result.release_sha256
            row.size = result.size
            row.release_size = len(result.release_bytes)
            row.kind = result.kind.value if result.kind else "unknown"
            row.check = {
                **_check_json(result, sdc, library, badge),
                "owner": self._file_owner(owner_uid),
            }
            row.added_at = tx.now
            if changed:
                row.changed_in_round = target_round
            self._ensure_group(tx.session, request, group)
            request.updated_at = tx.now
            tx.session.flush()
            tx.audit(
                actor,
                EventType.FILE_ADDED,
                request,
                object=path,
                file_hashes={path: result.sha256},
                details={
                    "file_id": row.id,
                    "group": group,
                    "release_sha256": result.release_sha256,
                    "size": row.size,
                    "release_size": row.release_size,
                    "kind": row.kind,
                    "outcome": result.outcome,
                    "sdc_verdict": sdc.get("verdict") if sdc else None,
                    "library_record": library["status"],
                    "replaced": replaced,
                    "content_changed": changed,
                    "changed_in_round": row.changed_in_round,
                    "owner": row.check["owner"],
                },
            )
            entry = self._file_entry(row, {})
            entry["check"] = member_check(entry["check"])  # the author: verdicts, not cells
            return {**entry, "replaced": replaced, "content_changed": changed}

    @staticmethod
    def _ensure_group(session: Session, request: Request, name: str) -> FileGroup:
        group = session.execute(
            select(FileGroup).where(FileGroup.request_id == request.id, FileGroup.name == name)
        ).scalar_one_or_none()
        if group is None:
            group = FileGroup(request_id=request.id, name=name, context="", controls="")
            session.add(group)
            session.flush()
        return group

    def library_records(self, project: str) -> LibraryRecords:
        """The library's records in ``project``'s outputs folder (each results.json read once)."""
        return LibraryRecords(_library_reader(self.outputs_root(project)), self.sdc_params)

    def _recheck_library(
        self, actor: Actor, request_id: str
    ) -> dict[int, tuple[str, dict[str, Any]]]:
        """Each file's check set again against the outputs folder's library records as they
        are now: ``{file id: (sha256 it was made for, new check)}`` for the checks that change.

        A record that matched the file's bytes when it was added stays (it was about these
        very bytes), with a sentence when the folder's record has changed since.
        """
        with self.reading("submit", actor, request_id) as session:
            request = self.load_request(session, request_id)
            self.require(session, actor, Permission.SUBMIT, request)
            rows = [(f.id, f.path, f.sha256, f.check or {}) for f in self._files(session, request)]
            project = request.project
        records = self.library_records(project)
        updates: dict[int, tuple[str, dict[str, Any]]] = {}
        for file_id, path, sha256, check in rows:
            if "badge" not in check:
                continue  # checked before library records were compared: shown as such
            stored = check.get("library") or {}
            library = records.for_file(path, sha256)
            if library.get("status") != "matched" and stored.get("status") == "matched":
                library = {
                    **stored,
                    "message": "The library's record matched these bytes when the file was "
                    f"added; {library.get('results_json', 'results.json')} no longer holds "
                    "it (the session was run again or edited since): the record shown is the "
                    "one read when the file was added.",
                }
            sdc, badge = combine(_raw_count_check(check.get("sdc")), library, self.sdc_params)
            new = {**check, "sdc": sdc, "library": library, "badge": badge}
            if new != check:
                updates[file_id] = (sha256, new)
        return updates

    def remove_file(self, actor: Actor, request_id: str, file_id: int) -> None:
        """Take a file (and its votes) out of a draft or returned request."""
        with self.writing("remove_file", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.REMOVE_FILE, request)
            row = self.request_file(tx.session, request, file_id)
            tx.session.execute(delete(VoteRow).where(VoteRow.file_id == row.id))
            for comment in tx.session.execute(
                select(Comment).where(Comment.file_id == row.id)
            ).scalars():
                comment.file_id = None
            tx.session.delete(row)
            request.updated_at = tx.now
            tx.session.flush()
            tx.audit(
                actor,
                EventType.FILE_REMOVED,
                request,
                object=row.path,
                file_hashes={row.path: row.sha256},
                details={"file_id": row.id, "group": row.group},
            )

    def set_group_context(
        self, actor: Actor, request_id: str, group: str, context: str, controls: str
    ) -> dict[str, Any]:
        """Set a file group's context (what the files are) and controls (disclosure controls)."""
        with self.writing("set_group_context", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.EDIT_CONTEXT, request)
            name = _group_name(group)
            context = _clean_text(context, "The context", MAX_CONTEXT, allow_empty=True)
            controls = _clean_text(controls, "The controls", MAX_CONTEXT, allow_empty=True)
            row = self._ensure_group(tx.session, request, name)
            row.context = context
            row.controls = controls
            request.updated_at = tx.now
            tx.audit(
                actor,
                EventType.CONTEXT_EDITED,
                request,
                object=name,
                details={
                    "context_sha256": sha256_text(context),
                    "controls_sha256": sha256_text(controls),
                },
            )
            return {"name": name, "context": context, "controls": controls}

    def submit(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """Submit a draft, or resubmit a returned request (a new review round).

        Each file's badge is first set again against the library's records in the outputs
        folder as they are now (a file changed after the library checked it is flagged).
        """
        rechecked = self._recheck_library(actor, request_id)
        with self.writing("submit", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.SUBMIT, request)
            badges: dict[str, dict[str, Any]] = {}
            for row in self._files(tx.session, request):
                update = rechecked.get(row.id)
                if update is not None and update[0] == row.sha256:
                    row.check = update[1]
                    badges[row.path] = {
                        "library_record": (update[1].get("library") or {}).get("status"),
                        "sdc_verdict": (update[1].get("badge") or {}).get("verdict"),
                    }
            resubmit = request.state == RequestState.RETURNED
            carried: dict[str, dict[str, str]] = {}
            changed: list[str] = []
            if resubmit:
                old_round, new_round = request.round, request.round + 1
                previous = self._votes(tx.session, request, old_round)
                for row in self._files(tx.session, request):
                    before = previous.get(row.id, {})
                    if row.changed_in_round == new_round:
                        after = votes_after_file_change(before)
                        changed.append(row.path)
                    else:
                        after = votes_after_resubmit(before)
                    for reviewer, vote in sorted(after.items()):
                        tx.session.add(
                            VoteRow(
                                request_id=request.id,
                                file_id=row.id,
                                reviewer=reviewer,
                                round=new_round,
                                vote=vote.value,
                                updated_at=tx.now,
                            )
                        )
                    if after:
                        carried[row.path] = {r: v.value for r, v in sorted(after.items())}
                request.round = new_round
            before_state, after_state = self._move(tx, request, Action.SUBMIT)
            request.reviews_required = self.enclave.review.reviews_required
            request.submitted_at = tx.now
            details: dict[str, Any] = {
                "from": before_state.value,
                "state": after_state.value,
                "round": request.round,
                "reviews_required": request.reviews_required,
            }
            if resubmit:
                details["votes"] = carried
                details["files_changed"] = changed
            if badges:
                details["sdc_rechecked"] = badges
            tx.audit(
                actor,
                EventType.RESUBMITTED if resubmit else EventType.SUBMITTED,
                request,
                file_hashes=self._release_hashes(tx.session, request),
                details=details,
            )
            self._notify(
                tx,
                request,
                "submitted",
                self._checkers_to_notify(request),
                "is waiting for review" + (f" (round {request.round})" if resubmit else ""),
            )
            return self._summary(tx.session, request)

    def _release_hashes(self, session: Session, request: Request) -> dict[str, str]:
        return {f.path: f.release_sha256 for f in self._files(session, request)}

    def withdraw(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """The author withdraws the request (any time before approval)."""
        return self._transition("withdraw", actor, request_id, Permission.WITHDRAW, Action.WITHDRAW)

    def _transition(
        self,
        op: str,
        actor: Actor,
        request_id: str,
        permission: Permission,
        action: Action,
        *,
        notify_author: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self.writing(op, actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            view = self.require(tx.session, actor, permission, request)
            before, after = self._move(tx, request, action)
            details = {"from": before.value, "state": after.value, "round": request.round}
            if action in (Action.RETURN, Action.REJECT, Action.APPROVE):
                details["decision"] = view.decision().value
                details["votes"] = {
                    path: {r: v.value for r, v in sorted(view.counted_votes(path).items())}
                    for path in sorted(view.files)
                }
            details.update(extra or {})
            tx.audit(
                actor,
                _STATE_EVENTS[action],
                request,
                file_hashes=self._release_hashes(tx.session, request),
                details=details,
            )
            if notify_author:
                self._notify(tx, request, op, [request.author], notify_author)
            return self._summary(tx.session, request)

    # -- reviewing -----------------------------------------------------------------------------

    def view_file(self, actor: Actor, request_id: str, file_id: int) -> FileContent:
        """The bytes that would be released for one file, for a reviewing checker once the
        request is submitted (``Permission.VIEW_FILE``); every view is audited as FILE_VIEWED
        with the viewer, whichever route serves it (the review page, its raw bytes)."""
        with self.writing("view_file", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.VIEW_FILE, request)
            row = self.request_file(tx.session, request, file_id)
            content = self._content(row)
            tx.audit(
                actor,
                EventType.FILE_VIEWED,
                request,
                object=row.path,
                file_hashes={row.path: row.release_sha256},
                details={"file_id": row.id, "round": request.round},
            )
            return content

    def preview_file(self, actor: Actor, request_id: str, file_id: int) -> dict[str, Any]:
        """What project members see of a file before release: made here, never its bytes.

        The file's kind, size and hashes, a table's shape (rows and columns, counted here) and
        its checks as :func:`member_check` keeps them: verdicts and counts, never a cell, a
        label, a header or a line of its text (the browser is outside the enclave: whatever is
        shown to a researcher has left it). Audited as FILE_PREVIEWED with the viewer.
        """
        with self.writing("preview_file", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.VIEW_PREVIEW, request)
            row = self.request_file(tx.session, request, file_id)
            shape = None
            if row.kind in (FileKind.CSV.value, FileKind.TSV.value):
                shape = _table_shape(self.content.get(row.release_sha256), row.kind)
            preview = {
                "request_id": request.id,
                "file_id": row.id,
                "path": row.path,
                "kind": row.kind,
                "size": row.release_size,
                "sha256": row.sha256,
                "release_sha256": row.release_sha256,
                "shape": shape,
                "check": member_check(view_check(row.check)),
            }
            tx.audit(
                actor,
                EventType.FILE_PREVIEWED,
                request,
                object=row.path,
                file_hashes={row.path: row.release_sha256},
                details={"file_id": row.id, "round": request.round},
            )
            return preview

    def _content(self, row: RequestFile) -> FileContent:
        data = self.content.get(row.release_sha256)
        try:
            media_type = MEDIA_TYPES[FileKind(row.kind)]
        except (KeyError, ValueError):
            media_type = "application/octet-stream"
        return FileContent(
            file_id=row.id,
            path=row.path,
            data=data,
            sha256=row.release_sha256,
            size=len(data),
            kind=row.kind,
            media_type=media_type,
            snapshot_sha256=row.sha256,
        )

    def vote(self, actor: Actor, request_id: str, file_id: int, vote: str) -> dict[str, Any]:
        """Record the actor's vote on one file in the current round.

        Setting a vote back to ``undecided`` is a reset and needs ``reset_vote`` too (allowed
        only before the actor's review is submitted).
        """
        with self.writing("vote", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            view = self.require(tx.session, actor, Permission.VOTE, request)
            try:
                choice = Vote(vote)
            except ValueError:
                raise InvalidInput(
                    f"{vote!r} is not a vote; use approve, request_changes or undecided."
                ) from None
            if choice is Vote.UNDECIDED:
                policy.require(actor, Permission.RESET_VOTE, view)
            row = self.request_file(tx.session, request, file_id)
            existing = tx.session.execute(
                select(VoteRow).where(
                    VoteRow.file_id == row.id,
                    VoteRow.reviewer == actor.username,
                    VoteRow.round == request.round,
                )
            ).scalar_one_or_none()
            self._cast(tx, actor, request, row, existing, choice)
            request.updated_at = tx.now
            return {
                "file_id": row.id,
                "path": row.path,
                "vote": choice.value,
                "round": request.round,
            }

    @staticmethod
    def _chosen(
        request: Request, files: list[RequestFile], file_ids: Iterable[int] | None
    ) -> list[RequestFile]:
        """The files a bulk action names (``None``: all of them), by path; 404 for a stranger."""
        by_id = {f.id: f for f in files}
        wanted = set(by_id) if file_ids is None else {_file_id(i) for i in file_ids}
        unknown = wanted - set(by_id)
        if unknown:
            raise NotFound(f"There is no file {min(unknown)} in request {request.id}.")
        return sorted((by_id[i] for i in wanted), key=lambda f: f.path)

    @staticmethod
    def _cast(
        tx: Transaction,
        actor: Actor,
        request: Request,
        row: RequestFile,
        existing: VoteRow | None,
        choice: Vote,
    ) -> None:
        """Set the actor's vote on ``row`` (``existing``: their vote row of this round, if any)
        and write its ``VOTED`` event."""
        previous = existing.vote if existing else None
        if existing is None:
            existing = VoteRow(
                request_id=request.id, file_id=row.id, reviewer=actor.username, round=request.round
            )
            tx.session.add(existing)
        existing.vote = choice.value
        existing.updated_at = tx.now
        tx.audit(
            actor,
            EventType.VOTED,
            request,
            object=row.path,
            file_hashes={row.path: row.release_sha256},
            details={
                "file_id": row.id,
                "vote": choice.value,
                "previous": previous,
                "round": request.round,
            },
        )

    def request_changes(
        self, actor: Actor, request_id: str, file_ids: Iterable[int] | None = None
    ) -> list[str]:
        """Bulk vote "request changes" on all files (or ``file_ids``): the safe direction only.

        Needs the same permission as one vote; there is no bulk approval (a checker approves
        each file after looking at it). Each changed vote is its own ``voted`` audit event, as
        if cast one by one. Returns the paths whose vote changed.
        """
        with self.writing("request_changes", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.VOTE, request)
            files = self._files(tx.session, request)
            wanted = self._chosen(request, files, file_ids)
            mine = {
                row.file_id: row
                for row in tx.session.execute(
                    select(VoteRow).where(
                        VoteRow.request_id == request.id,
                        VoteRow.round == request.round,
                        VoteRow.reviewer == actor.username,
                    )
                ).scalars()
            }
            changed = []
            for row in wanted:
                existing = mine.get(row.id)
                if existing is not None and existing.vote == Vote.REQUEST_CHANGES.value:
                    continue
                self._cast(tx, actor, request, row, existing, Vote.REQUEST_CHANGES)
                changed.append(row.path)
            if changed:
                request.updated_at = tx.now
            return changed

    def reset_votes(
        self, actor: Actor, request_id: str, file_ids: Iterable[int] | None = None
    ) -> list[str]:
        """Set the actor's own votes back to undecided (all files, or ``file_ids``).

        The safe direction only: allowed before the actor's review is submitted. Returns the
        paths whose vote was reset.
        """
        with self.writing("reset_votes", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.RESET_VOTE, request)
            files = self._files(tx.session, request)
            paths = {f.id: f.path for f in self._chosen(request, files, file_ids)}
            reset = []
            for row in tx.session.execute(
                select(VoteRow).where(
                    VoteRow.request_id == request.id,
                    VoteRow.round == request.round,
                    VoteRow.reviewer == actor.username,
                    VoteRow.file_id.in_(paths),
                )
            ).scalars():
                if row.vote != Vote.UNDECIDED:
                    row.vote = Vote.UNDECIDED.value
                    row.updated_at = tx.now
                    reset.append(paths[row.file_id])
            reset.sort()
            request.updated_at = tx.now
            tx.audit(
                actor,
                EventType.VOTE_RESET,
                request,
                details={"round": request.round, "files": reset},
            )
            return reset

    def comment(
        self,
        actor: Actor,
        request_id: str,
        body: str,
        visibility: str = "public",
        file_id: int | None = None,
    ) -> dict[str, Any]:
        """Comment on the request (or one of its files): ``public`` or ``private`` (checkers)."""
        with self.writing("comment", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            if visibility not in ("public", "private"):
                self.require(tx.session, actor, Permission.VIEW_REQUEST, request)
                raise InvalidInput("A comment is either public or private.")
            permission = (
                Permission.COMMENT_PUBLIC if visibility == "public" else Permission.COMMENT_PRIVATE
            )
            self.require(tx.session, actor, permission, request)
            text = _clean_text(body, "The comment", MAX_COMMENT)
            row = self.request_file(tx.session, request, file_id) if file_id is not None else None
            comment = Comment(
                request_id=request.id,
                file_id=row.id if row else None,
                author=actor.username,
                visibility=visibility,
                round=request.round,
                body=text,
                created_at=tx.now,
                during_review=request.state in REVIEW_STATES,
            )
            tx.session.add(comment)
            tx.session.flush()
            tx.audit(
                actor,
                EventType.COMMENTED,
                request,
                object=row.path if row else None,
                details={
                    "comment_id": comment.id,
                    "visibility": visibility,
                    "round": request.round,
                    "body_sha256": sha256_text(text),
                    "during_review": comment.during_review,
                },
            )
            return self._comment_entry(comment, row.path if row else None)

    def submit_review(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """Submit the actor's review of the current round (every file voted on)."""
        with self.writing("submit_review", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            view = self.require(tx.session, actor, Permission.SUBMIT_REVIEW, request)
            reviews_in = len(view.reviewers_who_submitted) + 1
            before, after = self._move(
                tx,
                request,
                Action.SUBMIT_REVIEW,
                reviews_in=reviews_in,
                reviews_required=request.reviews_required,
            )
            tx.session.add(
                Review(
                    request_id=request.id,
                    reviewer=actor.username,
                    round=request.round,
                    submitted_at=tx.now,
                )
            )
            tx.audit(
                actor,
                EventType.REVIEW_SUBMITTED,
                request,
                details={
                    "from": before.value,
                    "state": after.value,
                    "round": request.round,
                    "reviews_in": reviews_in,
                    "votes": {
                        path: votes[actor.username].value
                        for path, votes in sorted(view.files.items())
                        if actor.username in votes
                    },
                },
            )
            if after is RequestState.REVIEWED:
                reviewers = set(view.reviewers_who_submitted) | {actor.username}
                self._notify(tx, request, "review_complete", reviewers, "has all its reviews")
            return self._summary(tx.session, request)

    def return_request(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """A checker returns a reviewed request to its author for changes."""
        return self._transition(
            "return",
            actor,
            request_id,
            Permission.RETURN,
            Action.RETURN,
            notify_author="was returned to you for changes",
        )

    def approve(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """A checker approves a reviewed request whose every file is approved."""
        return self._transition("approve", actor, request_id, Permission.APPROVE, Action.APPROVE)

    def reject(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """A checker rejects a reviewed request: nothing is released."""
        return self._transition(
            "reject",
            actor,
            request_id,
            Permission.REJECT,
            Action.REJECT,
            notify_author="was rejected",
        )

    def release(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """Release an approved request: sign and store its release record; returns it (signed).

        Every file's release bytes are read back from the content store and verified first; a
        corrupt or missing blob stops the release (nothing changes).
        """
        key = self.private_key()
        with self.writing("release", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            view = self.require(tx.session, actor, Permission.RELEASE, request)
            files = self._files(tx.session, request)
            for row in files:
                try:
                    self.content.get(row.release_sha256)
                except (KeyError, ValueError) as exc:
                    raise EgressError(
                        f"{row.path} can't be released: its approved bytes are missing or "
                        f"corrupt in the content store ({exc})."
                    ) from None
            head_row = tx.log_row
            head_time = tx.session.execute(
                select(AuditEventRow.time).where(AuditEventRow.seq == head_row.head_seq)
            ).scalar_one()
            checkpoint = Checkpoint(
                head_row.log_id, head_row.head_seq, head_row.head_hash, head_time
            )
            comments = tx.session.execute(
                select(Comment)
                .where(Comment.request_id == request.id, Comment.visibility == "public")
                .order_by(Comment.created_at, Comment.id)
            ).scalars()
            paths = {f.id: f.path for f in files}
            record = release_record(
                request_id=request.id,
                project=request.project,
                author=request.author,
                released_at=tx.now,
                released_by=actor.username,
                files=[
                    {"path": f.path, "sha256": f.release_sha256, "size": f.release_size}
                    for f in files
                ],
                votes=[
                    {"reviewer": reviewer, "file": path, "vote": vote.value}
                    for path in sorted(view.files)
                    for reviewer, vote in sorted(view.counted_votes(path).items())
                ],
                public_comments=[
                    {
                        "author": c.author,
                        "time": format_time(c.created_at),
                        "round": c.round,
                        "file": paths.get(c.file_id) if c.file_id else None,
                        "text": c.body,
                    }
                    for c in comments
                ],
                sdc_policy={
                    "sdc": self.sdc_params.as_dict(),
                    "file_checks": dataclasses.asdict(self.check_policy),
                    "reviews_required": request.reviews_required,
                    "verdicts": {
                        f.path: ((view_check(f.check) or {}).get("sdc") or {}).get("verdict")
                        for f in files
                    },
                },
                audit_head=checkpoint,
                tool_versions=_versions("sqlalchemy", "numpy", "pandas", "cryptography"),
            )
            signed = sign_record(record, key)
            record_json = canonical_json(signed).decode("utf-8")
            tx.session.add(
                Release(
                    request_id=request.id,
                    released_at=tx.now,
                    released_by=actor.username,
                    record_json=record_json,
                )
            )
            before, after = self._move(tx, request, Action.RELEASE)
            tx.audit(
                actor,
                EventType.RELEASED,
                request,
                file_hashes={f.path: f.release_sha256 for f in files},
                details={
                    "from": before.value,
                    "state": after.value,
                    "round": request.round,
                    "record_sha256": sha256_text(record_json),
                    "key_id": key_id(key),
                },
            )
            self._notify(tx, request, "released", [request.author], "was released")
            head = Checkpoint.of(tx.events[-1], self.log_id)
        if self.checkpoint_path is not None:
            try:
                append_checkpoint(self.checkpoint_path, head)
            except OSError:
                log.exception("could not append the audit checkpoint to %s", self.checkpoint_path)
        return signed

    def download_released(self, actor: Actor, request_id: str, file_id: int) -> FileContent:
        """A project member downloads one released file (exactly the approved bytes; audited)."""
        with self.writing("download_released", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.DOWNLOAD_RELEASED, request)
            row = self.request_file(tx.session, request, file_id)
            release = tx.session.execute(
                select(Release).where(Release.request_id == request.id)
            ).scalar_one_or_none()
            released = json.loads(release.record_json)["record"]["files"] if release else []
            if {"path": row.path, "sha256": row.release_sha256, "size": row.release_size} not in (
                released
            ):
                raise EgressError(
                    f"{row.path} is not in this request's release record; it can't be downloaded."
                )
            content = self._content(row)
            tx.audit(
                actor,
                EventType.DOWNLOADED,
                request,
                object=row.path,
                file_hashes={row.path: row.release_sha256},
                details={"file_id": row.id},
            )
            return content

    def revoke(self, actor: Actor, request_id: str, reason: str = "") -> dict[str, Any]:
        """Revoke a release: no further downloads. ``reason`` goes into the audit log."""
        if not isinstance(reason, str) or len(reason) > MAX_COMMENT:
            raise InvalidInput(f"The reason must be text of at most {MAX_COMMENT} characters.")
        return self._transition(
            "revoke",
            actor,
            request_id,
            Permission.REVOKE,
            Action.REVOKE,
            notify_author="was revoked: its files can no longer be downloaded",
            extra={"reason": reason.strip()},
        )

    def release_record(self, actor: Actor, request_id: str) -> dict[str, Any] | None:
        """The signed release record of a released (or revoked) request, else ``None``."""
        with self.reading("release_record", actor, request_id) as session:
            request = self.load_request(session, request_id)
            self.require(session, actor, Permission.VIEW_REQUEST, request)
            release = session.execute(
                select(Release).where(Release.request_id == request.id)
            ).scalar_one_or_none()
            return json.loads(release.record_json) if release else None

    # -- trusted re-execution (the runner is another container: egress.reexecution.service) ---

    @property
    def reexecution_jobs(self) -> JobsFolder:
        """The jobs folder shared with the re-execution runner (``<state_dir>/reexec``)."""
        jobs = getattr(self, "_reexecution_jobs", None)
        if jobs is None:
            jobs = self._reexecution_jobs = JobsFolder(Path(self.enclave.state_dir) / "reexec")
        return jobs

    @reexecution_jobs.setter
    def reexecution_jobs(self, jobs: JobsFolder) -> None:
        self._reexecution_jobs = jobs

    def request_reexecution(
        self, actor: Actor, request_id: str, file_id: int, parameters: object = None
    ) -> dict[str, Any]:
        """Ask the runner to re-run notebook ``file_id`` of the request (queued; see
        ``docs/checker-reexecution.md``). Audited as REEXECUTION_REQUESTED."""
        return reexecution_service.request(self, actor, request_id, file_id, parameters)

    def list_reexecutions(self, actor: Actor, request_id: str) -> list[dict[str, Any]]:
        """The request's trusted re-executions, newest first."""
        return reexecution_service.list_for_request(self, actor, request_id)

    def reexecution(self, actor: Actor, request_id: str, reexecution_id: str) -> dict[str, Any]:
        """One re-execution with the submitted files compared to the trusted outputs."""
        return reexecution_service.detail(self, actor, request_id, reexecution_id)

    def record_reexecution_view(
        self, actor: Actor, request_id: str, reexecution_id: str, path: str, sha256: str
    ) -> None:
        """Audit a checker's view of a re-execution's executed notebook (bytes made from the
        data, shown in the browser) as FILE_VIEWED, like any other file view."""
        with self.writing("view_reexecution", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.VIEW_FILE, request)
            tx.audit(
                actor,
                EventType.FILE_VIEWED,
                request,
                object=path,
                file_hashes={path: sha256} if sha256 else {},
                details={"reexecution_id": str(reexecution_id)[:64], "round": request.round},
            )

    def collect_reexecutions(self) -> int:
        """Take in the runner's finished results (signed, stored, audited as RE_EXECUTED)."""
        return reexecution_service.collect(self)

    def differencing(self, actor: Actor, request_id: str, file_id: int) -> dict[str, Any] | None:
        """The differencing warning of a CSV/TSV table against the project's earlier releases
        (``havre.sdc.differencing``; ``None`` for other files). Released and revoked requests
        count: their files left. The 200 most recently changed released tables are compared."""
        tables = (FileKind.CSV.value, FileKind.TSV.value)
        with self.reading("differencing", actor, request_id) as session:
            request = self.load_request(session, request_id)
            self.require(session, actor, Permission.VIEW_FILE, request)
            row = self.request_file(session, request, file_id)
            if row.kind not in tables:
                return None
            target = (row.path, row.release_sha256, row.kind)
            earlier = session.execute(
                select(Request.id, RequestFile.path, RequestFile.release_sha256, RequestFile.kind)
                .join(RequestFile, RequestFile.request_id == Request.id)
                .where(
                    Request.project == request.project,
                    Request.id != request.id,
                    Request.state.in_([RequestState.RELEASED.value, RequestState.REVOKED.value]),
                    RequestFile.kind.in_(tables),
                )
                .order_by(Request.updated_at.desc(), RequestFile.id)
                .limit(200)
            ).all()

        def parse(name: str, sha256: str, kind: str) -> Any:
            text = self.content.get(sha256).decode("utf-8-sig", errors="replace")
            sep = "\t" if kind == FileKind.TSV.value else ","
            return count_table_from_csv(text, name=name, delimiter=sep)

        new = parse(target[0], target[1], target[2])
        if new is None:
            return None
        released = [parse(f"{rid}: {path}", sha, kind) for rid, path, sha, kind in earlier]
        report = differencing_warnings(new, [t for t in released if t], self.sdc_params)
        return {
            "verdict": report.verdict,
            "compared": list(report.compared),
            "flags": [f.sentence(self.sdc_params.threshold) for f in report.flags[:200]],
            "flag_count": len(report.flags),
            "notes": list(report.notes),
        }

    # -- views ----------------------------------------------------------------------------------

    @staticmethod
    def _counts() -> tuple[Any, Any]:
        """Correlated subqueries: reviews in the request's current round, and its files."""
        reviews = (
            select(func.count())
            .select_from(Review)
            .where(Review.request_id == Request.id, Review.round == Request.round)
            .correlate(Request)
            .scalar_subquery()
        )
        files = (
            select(func.count())
            .select_from(RequestFile)
            .where(RequestFile.request_id == Request.id)
            .correlate(Request)
            .scalar_subquery()
        )
        return reviews, files

    def _summary(
        self,
        session: Session,
        request: Any,  # a Request, or a row of its _SUMMARY_COLUMNS
        counts: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        if counts is None:
            reviews, files = self._counts()
            row = session.execute(select(reviews, files).where(Request.id == request.id)).one()
            counts = (row[0], row[1])
        state = RequestState(request.state)
        return {
            "id": request.id,
            "project": request.project,
            "author": request.author,
            "title": request.title,
            "state": state.value,
            "turn": turn_of(state).value,
            "round": request.round,
            "reviews_required": request.reviews_required,
            "reviews_in": counts[0],
            "files": counts[1],
            "created_at": _iso(request.created_at),
            "updated_at": _iso(request.updated_at),
            "submitted_at": _iso(request.submitted_at),
        }

    @staticmethod
    def _file_entry(row: RequestFile, votes: Mapping[str, Vote]) -> dict[str, Any]:
        return {
            "id": row.id,
            "path": row.path,
            "group": row.group,
            "sha256": row.sha256,
            "release_sha256": row.release_sha256,
            "size": row.size,
            "release_size": row.release_size,
            "kind": row.kind,
            "check": view_check(row.check),
            "added_at": _iso(row.added_at),
            "changed_in_round": row.changed_in_round,
            "votes": {r: v.value for r, v in sorted(votes.items())},
        }

    @staticmethod
    def _comment_entry(comment: Comment, path: str | None) -> dict[str, Any]:
        return {
            "id": comment.id,
            "author": comment.author,
            "visibility": comment.visibility,
            "round": comment.round,
            "during_review": comment.during_review,
            "file_id": comment.file_id,
            "file": path,
            "body": comment.body,
            "created_at": _iso(comment.created_at),
        }

    def get_request(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """Everything ``actor`` may see of one request.

        The summary (see :meth:`list_requests`) plus ``allowed`` (the permissions the actor has
        now: which buttons to show), ``groups`` (name, context, controls), ``files`` (each with
        its check results and the votes the actor may see), ``reviewers`` (who submitted a
        review this round), ``comments`` and, once released, ``release`` (with the signed
        record). While reviews are independent a checker sees only their own votes, and the
        project's members see no votes until the checkers have finished; private comments are
        shown to checkers only; checkers' comments of a round still in independent review are
        shown only to whoever may see that round's votes. ``decision`` (the combined verdict of
        the votes) is included only for those who may see everyone's votes.
        """
        with self.reading("get_request", actor, request_id) as session:
            request = self.load_request(session, request_id)
            files, groups = self._files(session, request), self._groups(session, request)
            view = self.require(
                session, actor, Permission.VIEW_REQUEST, request, files=files, groups=groups
            )
            allowed = policy.allowed_permissions(actor, view)
            see_all = Permission.VIEW_VOTES_OF_OTHERS in allowed
            see_private = Permission.VIEW_PRIVATE_COMMENTS in allowed
            paths = {f.id: f.path for f in files}
            result = self._summary(
                session, request, (len(view.reviewers_who_submitted), len(files))
            )
            result["allowed"] = sorted(p.value for p in allowed)
            result["groups"] = [
                {"name": g.name, "context": g.context, "controls": g.controls} for g in groups
            ]
            entries = []
            sees_contents = Permission.VIEW_FILE in allowed
            for row in files:
                votes = view.files.get(row.path, {})
                if see_all:
                    entry = self._file_entry(row, votes)
                    counted = view.counted_votes(row.path)
                    entry["decision"] = file_decision(counted, request.reviews_required).value
                else:
                    entry = self._file_entry(
                        row, {r: v for r, v in votes.items() if r == actor.username}
                    )
                if not sees_contents:  # members and administrators: no cell, label or text
                    entry["check"] = member_check(entry["check"])
                entries.append(entry)
            result["files"] = entries
            result["reviewers"] = sorted(view.reviewers_who_submitted)
            if see_all:
                result["decision"] = view.decision().value
            comments = []
            for c in session.execute(
                select(Comment)
                .where(Comment.request_id == request.id)
                .order_by(Comment.created_at, Comment.id)
            ).scalars():
                if c.visibility == "private" and not see_private:
                    continue
                if (
                    not see_all
                    and c.during_review
                    and c.round == request.round
                    and c.author != actor.username
                ):
                    continue  # a checker's comment of a round still under review
                comments.append(self._comment_entry(c, paths.get(c.file_id or 0)))
            result["comments"] = comments
            release = session.execute(
                select(Release).where(Release.request_id == request.id)
            ).scalar_one_or_none()
            result["release"] = (
                {
                    "released_at": _iso(release.released_at),
                    "released_by": release.released_by,
                    "record": json.loads(release.record_json),
                }
                if release
                else None
            )
            return result

    def list_requests(
        self,
        actor: Actor,
        *,
        project: str | None = None,
        state: str | None = None,
        mine_to_review: bool = False,
        older_than: timedelta | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """Summaries of the requests ``actor`` may see, most recently updated first.

        Members see their projects' requests; checkers and administrators see every project's
        once submitted (a draft, or a request withdrawn before submission, only if a member).
        ``mine_to_review``: the checker's queue (the checkers' turn, not their own request, and
        not already reviewed by them in this round). ``older_than``: not updated for that long.
        ``limit``: at most that many; ``after``: the :func:`page_cursor` of the last summary of
        the previous page (keyset paging: a page stays cheap however long the history is).
        Each summary: ``id, project, author, title, state, turn, round, reviews_required,
        reviews_in, files, created_at, updated_at, submitted_at``.
        """
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be a whole number, 1 or more.")
        position = _parse_cursor(after) if after is not None else None
        with self.reading("list_requests", actor) as session:
            reviews, files = self._counts()
            # plain rows, not ORM objects: a page of summaries costs a fraction of the time
            query = select(
                *(Request.__table__.c[name] for name in _SUMMARY_COLUMNS),
                reviews.label("n_reviews"),
                files.label("n_files"),
            ).order_by(Request.updated_at.desc(), Request.id)
            if not (actor.is_checker or actor.is_admin):
                query = query.where(Request.project.in_(sorted(actor.projects)))
            else:  # checkers and administrators: only submitted requests, outside their projects
                query = query.where(
                    Request.project.in_(sorted(actor.projects)) | Request.submitted_at.is_not(None)
                )
            if project is not None:
                query = query.where(Request.project == project)
            if state is not None:
                try:
                    query = query.where(Request.state == RequestState(state).value)
                except ValueError:
                    raise InvalidInput(f"{state!r} is not a request state.") from None
            if older_than is not None:
                query = query.where(Request.updated_at < self.now() - older_than)
            if mine_to_review:
                if not actor.is_checker:
                    return []
                checkers_turn = [s.value for s in RequestState if turn_of(s) is Party.CHECKERS]
                independent = [s.value for s in INDEPENDENT_REVIEW_STATES]
                reviewed_by_me = (
                    select(Review.id)
                    .where(
                        Review.request_id == Request.id,
                        Review.round == Request.round,
                        Review.reviewer == actor.username,
                    )
                    .correlate(Request)
                    .exists()
                )
                query = query.where(
                    Request.state.in_(checkers_turn),
                    Request.author != actor.username,
                    ~(Request.state.in_(independent) & reviewed_by_me),
                )
            if position is not None:
                updated, last_id = position
                query = query.where(
                    (Request.updated_at < updated)
                    | ((Request.updated_at == updated) & (Request.id > last_id))
                )
            if limit is not None:
                query = query.limit(limit)
            return [
                self._summary(session, row, (row.n_reviews, row.n_files))
                for row in session.execute(query)
            ]

    def request_audit(self, actor: Actor, request_id: str) -> list[dict[str, Any]]:
        """The audit events of one request (for checkers and administrators; see the policy)."""
        with self.reading("request_audit", actor, request_id) as session:
            request = self.load_request(session, request_id)
            self.require(session, actor, Permission.VIEW_AUDIT, request)
            lines = session.execute(
                select(AuditEventRow.line)
                .where(AuditEventRow.request_id == request.id)
                .order_by(AuditEventRow.seq)
            ).scalars()
            return [json.loads(line) for line in lines]

    # -- audit and notifications ------------------------------------------------------------------

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints kept outside the database (``checkpoint_path``), if any.

        An unterminated last line (a crash or power loss while appending) is skipped with a
        warning; any other unreadable line raises ``ValueError``.
        """
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return []
        text_ = self.checkpoint_path.read_text(encoding="utf-8")
        lines = text_.split("\n")
        if lines[-1].strip():
            log.warning("%s: ignoring an incomplete last line", self.checkpoint_path)
        found = []
        for number, line in enumerate(lines[:-1], 1):
            if line.strip():
                try:
                    found.append(Checkpoint.from_dict(json.loads(line)))
                except (ValueError, TypeError) as exc:
                    raise ValueError(
                        f"{self.checkpoint_path}, line {number}: not a checkpoint: {exc}"
                    ) from None
        return found

    def reconcile_checkpoints(self) -> list[tuple[str, Checkpoint]]:
        """Append the checkpoints of releases missing from the checkpoint file (a crash
        between a release's commit and its append); called at start and by :meth:`verify_audit`.
        Nothing is appended unless the log verifies (see :func:`reconcile_checkpoints`)."""
        if self.checkpoint_path is None:
            return []
        try:
            appended, report = reconcile_checkpoints(
                self.engine,
                self.checkpoint_path,
                kept=self.checkpoints(),
                public_key=self._public_or_none(),
            )
        except (OSError, ValueError):
            log.exception("could not reconcile the checkpoint file %s", self.checkpoint_path)
            return []
        if not report.ok:
            log.error(
                "checkpoints not reconciled: the audit log fails verification: %s", report.problem
            )
        return appended

    def _public_or_none(self) -> Ed25519PublicKey | None:
        try:
            return self.public_key()
        except (OSError, ValueError):
            log.exception("the public key can't be loaded; release signatures are not checked")
            return None

    def verify_audit(self, checkpoints: Iterable[Checkpoint] = ()) -> VerifyReport:
        """Verify the audit log and replay it against the tables (see the module docs).

        The checkpoint file is reconciled first (releases whose checkpoint a crash kept out
        of it are appended, when the log verifies); a release still without its checkpoint
        in the file fails the verification, naming it.
        """
        public = self._public_or_none()
        self.reconcile_checkpoints()
        try:
            kept = self.checkpoints()
        except (OSError, ValueError) as exc:
            return failed_report(None, f"the checkpoint file can't be read: {exc}", self.log_id)
        report = verify_database(self.engine, public_key=public, checkpoints=[*kept, *checkpoints])
        if report.ok and self.checkpoint_path is not None:
            missing = missing_release_checkpoints(self.engine, kept)
            if missing:
                request_id, checkpoint = missing[0]
                return failed_report(
                    report,
                    f"the release of request {request_id} (event {checkpoint.seq}) has no "
                    f"checkpoint in {self.checkpoint_path} ({len(missing)} release(s) missing)",
                    self.log_id,
                )
        return report

    def export_audit(self, fmt: str, dest: IO[str]) -> VerifyReport:
        """Write the whole audit log to ``dest`` as ``csv`` or ``jsonl``; returns the verdict."""
        return export_database_audit(self.engine, fmt, dest)

    def pending_notifications(self, max_attempts: int = 5) -> list[OutboxMessage]:
        """Notifications not sent yet (and not given up on), oldest first."""
        with read_session(self.engine) as session:
            return [
                _message(n)
                for n in session.execute(
                    select(Notification)
                    .where(Notification.sent_at.is_(None), Notification.attempts < max_attempts)
                    .order_by(Notification.id)
                ).scalars()
            ]

    def deliver_notifications(
        self, send: Callable[[OutboxMessage], None], *, max_attempts: int = 5, limit: int = 100
    ) -> dict[str, int]:
        """Send queued notifications with ``send``; failures are counted and retried later.

        A failing ``send`` never affects the workflow: the row's ``attempts`` goes up and its
        ``last_error`` is kept; after ``max_attempts`` it is left alone. Returns
        ``{"sent": n, "failed": m}``. Run one deliverer at a time (a crash between sending and
        recording can send a message twice; never zero times).
        """
        sent = failed = 0
        for message in self.pending_notifications(max_attempts)[:limit]:
            error = None
            try:
                send(message)
            except Exception as exc:  # a failed e-mail must never stop the workflow
                error = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("notification %s failed: %s", message.id, error)
            with write_session(self.engine) as session:
                row = session.get(Notification, message.id)
                if row is None or row.sent_at is not None:
                    continue
                row.attempts += 1
                if error is None:
                    row.sent_at = self.now()
                    sent += 1
                else:
                    row.last_error = error
                    failed += 1
        return {"sent": sent, "failed": failed}


def _message(row: Notification) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        event=row.event,
        to=tuple(json.loads(row.to)),
        subject=row.subject,
        body=row.body,
        created_at=row.created_at,
        attempts=row.attempts,
    )
