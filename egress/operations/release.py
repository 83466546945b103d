"""Release: the signed release record, downloads of released files, revocation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy import select

from egress.audit.chain import Checkpoint, EventType, canonical_json, format_time
from egress.audit.file_log import append_checkpoint
from egress.audit.replay import (
    sha256_text,
)
from egress.audit.signing import (
    key_id,
    release_record,
    sign_record,
)
from egress.domain.errors import (
    EgressError,
    InvalidInput,
)
from egress.domain.policy import Actor, Permission
from egress.domain.workflow import (
    Action,
)
from egress.files.sdc_badge import view_check
from egress.operations.base import ServiceBase
from egress.operations.common import (
    MAX_COMMENT,
    FileContent,
    _versions,
    log,
)
from egress.store.models import (
    AuditEventRow,
    Comment,
    Release,
)
from egress.store.queries import files_of


class ReleaseOperations(ServiceBase):
    """Release operations of :class:`egress.operations.facade.EgressService`."""

    def release(self, actor: Actor, request_id: str) -> dict[str, Any]:
        """Release an approved request: sign and store its release record; returns it (signed).

        Every file's release bytes are read back from the content store and verified first; a
        corrupt or missing blob stops the release (nothing changes).
        """
        key = self.private_key()
        with self.writing("release", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            view = self.require(tx.session, actor, Permission.RELEASE, request)
            files = files_of(tx.session, request)
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
