"""Views: the JSON shapes of a request, the request list and its audit trail."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from egress.domain import policy
from egress.domain.errors import (
    InvalidInput,
)
from egress.domain.policy import Actor, Permission
from egress.domain.workflow import (
    INDEPENDENT_REVIEW_STATES,
    Party,
    RequestState,
    Vote,
    file_decision,
    state_label,
    state_tone,
    turn_of,
)
from egress.files.sdc_badge import view_check
from egress.operations.base import ServiceBase
from egress.operations.common import (
    _SUMMARY_COLUMNS,
    _iso,
    _parse_cursor,
)
from egress.operations.sdc import (
    member_check,
)
from egress.store.models import (
    AuditEventRow,
    Comment,
    Release,
    Request,
    RequestFile,
    Review,
    ViewedFile,
)
from egress.store.queries import files_of, groups_of


class RequestViews(ServiceBase):
    """The views of :class:`egress.operations.facade.EgressService`."""

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
            "state_label": state_label(state),
            "state_tone": state_tone(state),
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
            files, groups = files_of(session, request), groups_of(session, request)
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
            ticked = (
                {
                    v.file_id: v.release_sha256
                    for v in session.execute(
                        select(ViewedFile).where(
                            ViewedFile.request_id == request.id,
                            ViewedFile.checker == actor.username,
                        )
                    ).scalars()
                }
                if sees_contents
                else {}
            )
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
                else:  # the checker's own "viewed" tick, for this version of the file
                    entry["viewed"] = ticked.get(row.id) == row.release_sha256
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
