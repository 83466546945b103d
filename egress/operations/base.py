"""The service's state and the building blocks every operation is made of (transactions,
loading, the policy check, notifications)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from egress.audit import db_log as audit_log
from egress.audit.chain import (
    AuditEvent,
    EventType,
)
from egress.audit.signing import (
    load_private_key,
    load_public_key,
    public_key_path,
)
from egress.domain import policy
from egress.domain.errors import (
    EgressError,
    NotFound,
    _refused,
)
from egress.domain.policy import Actor, Permission, PermissionDenied, RequestView
from egress.domain.workflow import (
    Action,
    RequestState,
    next_state,
)
from egress.files.checks import DEFAULT_POLICY, CheckPolicy
from egress.operations.common import (
    CHECKERS_MARKER,
    _file_id,
    _now_utc,
    _request_id,
    log,
)
from egress.store.content import ContentStore
from egress.store.db import current_revision, head_revision, read_session, write_session
from egress.store.models import (
    AuditLogRow,
    FileGroup,
    Notification,
    Request,
    RequestFile,
)
from egress.store.queries import files_of, groups_of, reviewers_of, votes_of
from havre.enclave.config import EnclaveConfig
from havre.sdc import SDCParams


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


class ServiceBase:
    """The service's configuration and building blocks.

    See :class:`egress.operations.facade.EgressService`.
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

    def _view(
        self,
        session: Session,
        request: Request,
        files: list[RequestFile] | None = None,
        groups: list[FileGroup] | None = None,
    ) -> RequestView:
        """What the policy needs to know of ``request`` (``files``/``groups``: already read)."""
        files = files_of(session, request) if files is None else files
        groups = groups_of(session, request) if groups is None else groups
        votes = votes_of(session, request, request.round)
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
            reviewers_who_submitted=frozenset(reviewers_of(session, request)),
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

    def permitted(
        self, session: Session, actor: Actor, request_id: object, permission: Permission
    ) -> Request:
        """The request, once ``actor`` is allowed ``permission`` on it (404/403/409 if not)."""
        request = self.load_request(session, request_id)
        self.require(session, actor, permission, request)
        return request

    def permitted_file(
        self,
        session: Session,
        actor: Actor,
        request_id: object,
        file_id: object,
        permission: Permission,
    ) -> tuple[Request, RequestFile]:
        """The request and its file ``file_id``, once ``actor`` is allowed ``permission``."""
        request = self.permitted(session, actor, request_id, permission)
        return request, self.request_file(session, request, file_id)

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
