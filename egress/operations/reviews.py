"""Reviews: votes, requests for changes, resets, submitted reviews, returning, approving
and rejecting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from egress.audit.chain import (
    EventType,
)
from egress.domain import policy
from egress.domain.errors import (
    InvalidInput,
    NotFound,
)
from egress.domain.policy import Actor, Permission
from egress.domain.workflow import (
    Action,
    RequestState,
    Vote,
)
from egress.operations.base import ServiceBase, Transaction
from egress.operations.common import (
    _file_id,
)
from egress.store.models import (
    Request,
    RequestFile,
    Review,
    ViewedFile,
)
from egress.store.models import Vote as VoteRow
from egress.store.queries import files_of


class ReviewOperations(ServiceBase):
    """Review operations of :class:`egress.operations.facade.EgressService`."""

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

    def set_viewed(
        self, actor: Actor, request_id: str, file_id: int, viewed: bool
    ) -> dict[str, Any]:
        """Tick (``viewed``) or untick a file as viewed by ``actor``, for its current version.

        Only a checker who may see the file's contents (``VIEW_FILE``: a reviewing checker of a
        submitted request, never its author) keeps ticks, and sees only their own. Not audited:
        a tick is the checker's working note and changes nothing that leaves the enclave; each
        view of the file is audited (``FILE_VIEWED``), and the votes are the decisions.
        """
        with self.writing("set_viewed", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.VIEW_FILE, request)
            row = self.request_file(tx.session, request, file_id)
            tick = tx.session.get(ViewedFile, (row.id, actor.username))
            if viewed and tick is None:
                tx.session.add(
                    ViewedFile(
                        file_id=row.id,
                        checker=actor.username,
                        request_id=request.id,
                        release_sha256=row.release_sha256,
                        viewed_at=tx.now,
                    )
                )
            elif viewed and tick is not None:
                tick.release_sha256, tick.viewed_at = row.release_sha256, tx.now
            elif tick is not None:
                tx.session.delete(tick)
            return {"file_id": row.id, "path": row.path, "viewed": bool(viewed)}

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
            files = files_of(tx.session, request)
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
            files = files_of(tx.session, request)
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
