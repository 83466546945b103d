"""Requests: idempotency, creating, submitting, withdrawing, group texts and the state moves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from egress.audit.chain import (
    EventType,
)
from egress.audit.replay import (
    sha256_text,
)
from egress.domain import policy
from egress.domain.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
)
from egress.domain.policy import Actor, Permission, RequestView
from egress.domain.workflow import (
    Action,
    RequestState,
    votes_after_file_change,
    votes_after_resubmit,
)
from egress.operations.base import ServiceBase
from egress.operations.common import (
    _IDEMPOTENCY_KEY,
    _STATE_EVENTS,
    IDEMPOTENCY_TTL,
    MAX_CONTEXT,
    MAX_TITLE,
    StoredAnswer,
    _clean_text,
    _group_name,
    new_request_id,
)
from egress.store.models import (
    IdempotencyKey,
    Request,
)
from egress.store.models import Vote as VoteRow
from egress.store.queries import files_of, votes_of


class RequestOperations(ServiceBase):
    """Request operations of :class:`egress.operations.facade.EgressService`."""

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

    def set_group_context(
        self, actor: Actor, request_id: str, group: str, context: str, controls: str
    ) -> dict[str, Any]:
        """Set a file group's context (what the files are) and controls (disclosure controls);
        returns the group and the request's state (``request_state``, unchanged by this)."""
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
            return {
                "name": name,
                "context": context,
                "controls": controls,
                "request_state": request.state,
            }

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
            for row in files_of(tx.session, request):
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
                previous = votes_of(tx.session, request, old_round)
                for row in files_of(tx.session, request):
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
        return {f.path: f.release_sha256 for f in files_of(session, request)}

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
