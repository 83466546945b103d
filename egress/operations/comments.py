"""Comments on requests, groups and files."""

from __future__ import annotations

from typing import Any

from egress.audit.chain import (
    EventType,
)
from egress.audit.replay import (
    sha256_text,
)
from egress.domain.errors import (
    InvalidInput,
)
from egress.domain.policy import Actor, Permission
from egress.domain.workflow import (
    REVIEW_STATES,
)
from egress.operations.base import ServiceBase
from egress.operations.common import (
    MAX_COMMENT,
    _clean_text,
)
from egress.store.models import (
    Comment,
)


class CommentOperations(ServiceBase):
    """Comment operations of :class:`egress.operations.facade.EgressService`."""

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
