"""File operations: the outputs folder, adding a file (checks, SDC, library records), removing,
viewing, previews and differencing.

The rules: a file enters a request only as the bytes the checks accepted, snapshotted into the
content store (what is reviewed is exactly what is released, whatever happens to the outputs
folder afterwards); every view and every preview of a file is audited with who saw it; a
member's preview is made here and never carries a cell, a label or a line of the file (the
member's browser is outside the enclave)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from egress.audit.chain import (
    EventType,
)
from egress.domain import policy
from egress.domain.errors import (
    EgressError,
    FileRefused,
    InvalidInput,
    _refused,
)
from egress.domain.policy import Actor, Permission, PermissionDenied
from egress.domain.workflow import (
    RequestState,
)
from egress.files.checks import check_file
from egress.files.kinds import MEDIA_TYPES, FileKind
from egress.files.notebooks import NotebookError, strip_outputs
from egress.files.sdc_badge import LibraryRecords, combine, view_check
from egress.operations.base import ServiceBase, Transaction
from egress.operations.common import (
    DEFAULT_GROUP,
    FileContent,
    _group_name,
    log,
)
from egress.operations.sdc import (
    LIBRARY_RECORD_MAX_BYTES,
    _check_json,
    _frequency_table_check,
    _library_reader,
    _raw_count_check,
    _table_shape,
    member_check,
)
from egress.store.models import (
    Comment,
    FileGroup,
    Request,
    RequestFile,
    Review,
)
from egress.store.models import Vote as VoteRow
from egress.store.queries import files_of
from havre.enclave.identities import IdentityError, owners_of, table_path
from havre.enclave.outputs_folder import (
    OutputPathError,
    read_output,
    read_output_owned,
    scan_outputs,
)
from havre.sdc.differencing import count_table_from_csv, differencing_warnings

#: The file a safe-analysis session keeps its records in (ACRO's name).
SESSION_RESULTS = "results.json"
#: Names of a session's own files, hidden from the list of files to add.
SESSION_METADATA = frozenset({SESSION_RESULTS, "config.json"})


def is_session_metadata(path: str) -> bool:
    """True for a safe-analysis session's own files (``results.json``, ``config.json``,
    ``checksums/...``): records about outputs, never outputs to release."""
    parts = path.split("/")
    return parts[-1] in SESSION_METADATA or "checksums" in parts[:-1]


class FileOperations(ServiceBase):
    """File operations of :class:`egress.operations.facade.EgressService`."""

    @staticmethod
    def _audit_seen(
        tx: Transaction, actor: Actor, event: EventType, request: Request, row: RequestFile
    ) -> None:
        """A checker or member was shown a file's release bytes (or what is made of them)."""
        tx.audit(
            actor,
            event,
            request,
            object=row.path,
            file_hashes={row.path: row.release_sha256},
            details={"file_id": row.id, "round": request.round},
        )

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

        ``{"files": [{"path", "size", "mtime", "owner"}], "skipped": [{"path", "reason"}]}``;
        ``owner`` is the name of the member whose server wrote the file (None if unknown), so
        the request page offers a member their own files first.
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
        owners: dict[int, str | None] = {}
        for entry in listing.entries:
            if entry.uid not in owners:
                owners[entry.uid] = self._file_owner(entry.uid)["user"]
        return {
            "files": [
                {"path": e.path, "size": e.size, "mtime": e.mtime, "owner": owners[e.uid]}
                for e in listing.entries
            ],
            "skipped": [{"path": s.path, "reason": s.reason} for s in listing.skipped],
        }

    def session_outputs(self, actor: Actor, project: str, folder: str) -> list[str]:
        """The outputs a safe-analysis session recorded: the files its ``results.json`` names
        (``folder`` is the session's folder in ``project``'s outputs folder, ``""`` for the top),
        as paths of the outputs folder, in the order of the records, each once."""
        decision = policy.check_create(actor, project)
        if not decision.allowed:
            exc = PermissionDenied(decision.reason, decision.status)
            _refused("session_outputs", actor, None, exc)
            raise exc
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        results = prefix + SESSION_RESULTS
        try:
            data = read_output(
                self.outputs_root(project), results, max_bytes=LIBRARY_RECORD_MAX_BYTES
            )
        except OutputPathError as exc:
            raise EgressError(f"{results} can't be read: {exc.reason}") from None
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise EgressError(f"{results} is not valid JSON.") from None
        records = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(records, dict):
            raise EgressError(f"{results} is not a safe-analysis results file (no 'results').")
        paths: list[str] = []
        for record in records.values():
            entries = record.get("files") if isinstance(record, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and name and prefix + name not in paths:
                    paths.append(prefix + name)
        if not paths:
            raise EgressError(f"{results} records no output file: there is nothing to add.")
        return paths

    def add_file(
        self,
        actor: Actor,
        request_id: str,
        path: str,
        group: str = DEFAULT_GROUP,
        *,
        as_code: bool = False,
    ) -> dict[str, Any]:
        """Snapshot ``path`` from the outputs folder into the request, in ``group``.

        ``as_code``: a notebook released as code: its outputs are stripped before the snapshot
        (:func:`egress.files.notebooks.strip_outputs`), so the checkers see and approve the
        stripped bytes, and those are what is released.

        Refused with :class:`FileRefused` (422) when the checks fail. Returns the file's entry
        (as in :meth:`get_request`) plus ``replaced``, ``content_changed`` and the request's
        state (``request_state``, unchanged by adding a file).
        """
        with self.reading("add_file", actor, request_id) as session:
            project = self.permitted(session, actor, request_id, Permission.ADD_FILE).project
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
        if as_code:
            try:
                if not path.lower().endswith(".ipynb"):
                    raise NotebookError("only a notebook (.ipynb) can be released as code")
                data = strip_outputs(data)
            except NotebookError as exc:
                refusal = FileRefused(str(path), [f"{path} can't be released as code: {exc}."])
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
            request = self.permitted(tx.session, actor, request_id, Permission.ADD_FILE)
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
                **({"as_code": True} if as_code else {}),
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
                    "as_code": as_code,
                    "changed_in_round": row.changed_in_round,
                    "owner": row.check["owner"],
                },
            )
            entry = self._file_entry(row, {})
            entry["check"] = member_check(entry["check"])  # the author: verdicts, not cells
            return {
                **entry,
                "replaced": replaced,
                "content_changed": changed,
                "request_state": request.state,
            }

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
            request = self.permitted(session, actor, request_id, Permission.SUBMIT)
            rows = [(f.id, f.path, f.sha256, f.check or {}) for f in files_of(session, request)]
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

    def remove_file(self, actor: Actor, request_id: str, file_id: int) -> dict[str, Any]:
        """Take a file (and its votes) out of a draft or returned request; returns the
        request's id and state and the removed file's id."""
        with self.writing("remove_file", actor, request_id) as tx:
            request, row = self.permitted_file(
                tx.session, actor, request_id, file_id, Permission.REMOVE_FILE
            )
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
            return {"id": request.id, "state": request.state, "file_id": row.id}

    def view_file(self, actor: Actor, request_id: str, file_id: int) -> FileContent:
        """The bytes that would be released for one file, for a reviewing checker once the
        request is submitted (``Permission.VIEW_FILE``); every view is audited as FILE_VIEWED
        with the viewer, whichever route serves it (the review page, its raw bytes)."""
        with self.writing("view_file", actor, request_id) as tx:
            request, row = self.permitted_file(
                tx.session, actor, request_id, file_id, Permission.VIEW_FILE
            )
            content = self._content(row)
            self._audit_seen(tx, actor, EventType.FILE_VIEWED, request, row)
            return content

    def preview_file(self, actor: Actor, request_id: str, file_id: int) -> dict[str, Any]:
        """What project members see of a file before release: made here, never its bytes.

        The file's kind, size and hashes, a table's shape (rows and columns, counted here) and
        its checks as :func:`member_check` keeps them: verdicts and counts, never a cell, a
        label, a header or a line of its text (the browser is outside the enclave: whatever is
        shown to a researcher has left it). Audited as FILE_PREVIEWED with the viewer.
        """
        with self.writing("preview_file", actor, request_id) as tx:
            request, row = self.permitted_file(
                tx.session, actor, request_id, file_id, Permission.VIEW_PREVIEW
            )
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
            self._audit_seen(tx, actor, EventType.FILE_PREVIEWED, request, row)
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

    def differencing(self, actor: Actor, request_id: str, file_id: int) -> dict[str, Any] | None:
        """The differencing warning of a CSV/TSV table against the project's earlier releases
        (``havre.sdc.differencing``; ``None`` for other files). Released and revoked requests
        count: their files left. The 200 most recently changed released tables are compared."""
        tables = (FileKind.CSV.value, FileKind.TSV.value)
        with self.reading("differencing", actor, request_id) as session:
            request, row = self.permitted_file(
                session, actor, request_id, file_id, Permission.VIEW_FILE
            )
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
