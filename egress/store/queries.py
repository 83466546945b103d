"""Queries of a request's rows that several operations share (each in the caller's session)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from egress.domain.workflow import Vote
from egress.store.models import FileGroup, Request, RequestFile, Review
from egress.store.models import Vote as VoteRow


def votes_of(session: Session, request: Request, round_: int) -> dict[int, dict[str, Vote]]:
    """The votes of ``round_``: file id -> reviewer -> vote."""
    votes: dict[int, dict[str, Vote]] = {}
    for file_id, reviewer, vote in session.execute(
        select(VoteRow.file_id, VoteRow.reviewer, VoteRow.vote).where(
            VoteRow.request_id == request.id, VoteRow.round == round_
        )
    ):
        votes.setdefault(file_id, {})[reviewer] = Vote(vote)
    return votes


def reviewers_of(session: Session, request: Request) -> list[str]:
    """Who submitted a review in the request's current round, in the order they did."""
    return list(
        session.execute(
            select(Review.reviewer)
            .where(Review.request_id == request.id, Review.round == request.round)
            .order_by(Review.submitted_at, Review.id)
        ).scalars()
    )


def files_of(session: Session, request: Request) -> list[RequestFile]:
    """The request's files, by path."""
    return list(
        session.execute(
            select(RequestFile)
            .where(RequestFile.request_id == request.id)
            .order_by(RequestFile.path)
        ).scalars()
    )


def groups_of(session: Session, request: Request) -> list[FileGroup]:
    """The request's file groups, by name."""
    return list(
        session.execute(
            select(FileGroup).where(FileGroup.request_id == request.id).order_by(FileGroup.name)
        ).scalars()
    )
