"""The egress service's HTML pages for researchers and checkers (forms post back to them).

Checked files are shown sanitised, under the checker page CSP (:mod:`egress.files.render`);
every action goes through the same core operations as the JSON API.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from tornado import web

from egress.domain.policy import Actor
from egress.domain.workflow import Party, RequestState, turn_of
from egress.files.render import CHECKER_PAGE_CSP, raw_response_headers, render_for_checker
from egress.operations import break_glass
from egress.operations.files import SESSION_RESULTS, is_session_metadata
from egress.operations.sdc import table_cell_marks
from egress.web.base import MAX_PAGE, BaseHandler, reason_phrase
from egress.web.openapi import REQUEST_ACTIONS

# --------------------------------------------------------------------------------- pages


class IndexPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        actor, arg = self.actor(), self.get_query_argument
        filters = {"project": arg("project", "") or None, "state": arg("state", "") or None}
        older = arg("older_than_days", "")
        if older:
            if not (older.isdigit() and int(older) <= 36500):
                self._refusal = {"message": "Older than: a whole number of days, 0 to 36500."}
                raise web.HTTPError(400)
            filters["older_than"] = timedelta(days=int(older))
        requests, after = await self.page_of_requests(**filters)
        queue = (
            await self.run(self.service.list_requests, actor, mine_to_review=True, limit=MAX_PAGE)
            if actor.is_checker
            else []
        )
        self.render_page(
            "index.html",
            requests=requests,
            next_page=self.next_page_url(after) if after else None,
            queue=queue,
            projects=sorted(actor.projects),
            filters={
                "project": filters["project"] or "",
                "state": filters["state"] or "",
                "older_than_days": older,
            },
            states=[s.value for s in RequestState],
        )


#: How long the hub's home keeps telling an author about a release.
RELEASED_NOTICE_DAYS = 14


class NoticesPage(BaseHandler):
    """What needs the signed-in user, for the hub's home page to embed (a frame: the hub's
    page can't call the service's API, which wants the service's XSRF token from scripts):
    the user's requests returned to them, or released in the last days, and for a checker how
    many requests wait for their review. Links open in the whole window; no form. Its one
    script (static/notices.js) copies the user's notices into the browser's localStorage
    (:data:`LAB_NOTICES_KEY`) for JupyterLab's banner, which may not connect to this service."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # framed by the hub's home (same origin); every other page keeps frame-ancestors 'none'
        self.set_header(
            "Content-Security-Policy",
            CHECKER_PAGE_CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'"),
        )
        self.set_header("X-Frame-Options", "SAMEORIGIN")

    @web.authenticated
    async def get(self) -> None:
        actor = self.actor()
        requests = await self.run(self.service.list_requests, actor, limit=MAX_PAGE)
        since = self.service.now() - timedelta(days=RELEASED_NOTICE_DAYS)
        mine = [
            q
            for q in requests
            if q["author"] == actor.username
            and (
                q["state"] == RequestState.RETURNED
                or (
                    q["state"] == RequestState.RELEASED
                    and q.get("updated_at")
                    and datetime.fromisoformat(q["updated_at"]) >= since
                )
            )
        ]
        queue = (
            await self.run(self.service.list_requests, actor, mine_to_review=True, limit=MAX_PAGE)
            if actor.is_checker
            else []
        )
        summary = lab_notices(actor.username, mine, self.url, self.service.now())
        self.render_page(
            "notices.html", mine=mine, queue_count=len(queue), lab_notices=script_json(summary)
        )


#: The browser's localStorage key the notices page writes and JupyterLab's banner reads
#: (labextension/src/index.js): same origin, so no connection from the notebook page.
LAB_NOTICES_KEY = "havre.notices"


def lab_notices(
    username: str, mine: list[dict[str, Any]], url: Any, now: datetime
) -> dict[str, Any]:
    """The summary JupyterLab's banner shows: whose it is, when it was written, and the user's
    returned or released requests (title, state in words, link). Only what the page shows."""
    return {
        "key": LAB_NOTICES_KEY,
        "user": username,
        "written_at": now.isoformat(timespec="seconds"),
        "notices": [
            {
                "id": q["id"],
                "title": q["title"],
                "state": str(q["state"]),
                "state_label": q.get("state_label") or "",
                "url": url("requests", q["id"]),
                "changed_at": q.get("updated_at") or "",
            }
            for q in mine
        ],
    }


def script_json(value: Any) -> Markup:
    """``value`` as JSON safe inside an HTML ``<script>`` block: ``<``, ``>`` and ``&`` (and the
    JavaScript line separators) as ``\\u`` escapes, so a title can't close the block."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return Markup(text)


#: At most this many ``?paths=`` a page takes (JupyterLab's "Add to release request")
MAX_PICKED_PATHS = 200
#: and at most this long each (a path in the outputs folder)
MAX_PICKED_PATH = 1024


def picked_paths(handler: BaseHandler, body: bool = False) -> list[str]:
    """The outputs-folder paths a page was asked to tick (``paths``, repeated): from JupyterLab's
    "Add to release request", carried through the new-request form. Only ticked in the add-files
    form (the adding itself checks each path); too many or too long is refused with a sentence."""
    raw = handler.get_body_arguments("paths") if body else handler.get_query_arguments("paths")
    paths = list(dict.fromkeys(p.strip() for p in raw if p.strip()))
    if len(paths) > MAX_PICKED_PATHS or any(len(p) > MAX_PICKED_PATH for p in paths):
        handler._refusal = {
            "message": f"Too many files to tick at once: at most {MAX_PICKED_PATHS} paths of at "
            f"most {MAX_PICKED_PATH} characters each."
        }
        raise web.HTTPError(400)
    return paths


def with_paths(url: str, paths: list[str]) -> str:
    """``url`` with ``?paths=`` for each path (the add-files form ticks them)."""
    return url + ("?" + urlencode([("paths", p) for p in paths]) if paths else "")


class NewRequestPage(BaseHandler):
    """A new release request in a project; with ``?paths=`` (JupyterLab's "Add to release
    request"), also the author's requests of the project that can still take files, each
    leading to its add-files form with those files ticked."""

    @web.authenticated
    async def get(self, project: str) -> None:
        paths = picked_paths(self)
        open_requests = []
        if paths:
            actor = self.actor()
            requests = await self.run(
                self.service.list_requests, actor, project=project, limit=MAX_PAGE
            )
            open_requests = [
                {**q, "add_url": with_paths(self.url("requests", q["id"]), paths)}
                for q in requests
                if q["author"] == actor.username
                and turn_of(RequestState(q["state"])) is Party.AUTHOR
            ]
        self.render_page(
            "new_request.html", project=project, paths=paths, open_requests=open_requests
        )


class RequestsForm(BaseHandler):
    @web.authenticated
    async def post(self) -> None:
        paths = picked_paths(self, body=True)
        summary = await self.run(
            self.service.create_request,
            self.actor(),
            self.get_body_argument("project", ""),
            self.get_body_argument("title", ""),
        )
        self.redirect(with_paths(self.url("requests", summary["id"]), paths))


async def _show_request(
    handler: BaseHandler,
    request_id: str,
    refusal: dict[str, Any] | None = None,
    typed: dict[str, Any] | None = None,
) -> None:
    """The request page; with ``refusal``, the sentence of a refused form on it (and what was
    typed into the add-file form, kept)."""
    actor = handler.actor()
    request = await handler.run(handler.service.get_request, actor, request_id)
    outputs = None
    if "add_file" in request["allowed"]:
        outputs = await handler.run(handler.service.list_outputs, actor, request["project"])
    reexecutions = None
    if "view_file" in request["allowed"]:
        reexecutions = await handler.run(handler.service.list_reexecutions, actor, request_id)
    handler.render_page(
        "request.html",
        r=request,
        outputs=outputs,
        tree=_outputs_tree(outputs, actor.username) if outputs else [],
        reexecutions=reexecutions,
        refusal=refusal,
        typed=typed or {},
    )


def _outputs_tree(outputs: dict[str, Any], user: str) -> list[dict[str, Any]]:
    """The outputs folder as folders of files for the add-files form: the sessions' own files
    (``results.json``, ``config.json``, ``checksums/``) hidden, a folder holding a
    ``results.json`` marked as a safe-analysis session, folders in name order."""
    folders: dict[str, dict[str, Any]] = {}
    for entry in outputs.get("files", []):
        path = entry["path"]
        folder, _, name = path.rpartition("/")
        node = folders.setdefault(folder, {"name": folder, "files": [], "session": False})
        if name == SESSION_RESULTS:
            node["session"] = True
        if is_session_metadata(path):
            continue
        node["files"].append({**entry, "name": name, "yours": entry.get("owner") == user})
    return [
        folders[name]
        for name in sorted(folders)
        if folders[name]["files"] or folders[name]["session"]
    ]


class RequestPage(BaseHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        # ?paths=: files to tick in the add-files form (JupyterLab's "Add to release request")
        paths = picked_paths(self)
        await _show_request(self, request_id, typed={"paths": paths} if paths else None)


#: The form actions that can't be undone: the request page's button leads to a confirmation
#: page first (no JavaScript needed); the action runs only with ``confirm=yes``.
#: action -> (permission, question, what it does, confirming button)
CONFIRMED_ACTIONS = {
    "withdraw": (
        "withdraw",
        "Withdraw this request?",
        "Checkers stop reviewing it and nothing in it is released. A withdrawn request can't "
        "be submitted again: to ask for these files later, start a new request.",
        "Yes, withdraw the request",
    ),
    "reject": (
        "reject",
        "Reject this request?",
        "Nothing in it is released, and the author can't resubmit it (they would start a new "
        "request). To ask the author for changes instead, return it to them.",
        "Yes, reject the request",
    ),
}
#: Refusals of a form that the request page shows in place (the request is still there)
_SHOWN_ON_THE_PAGE = (400, 409, 422)


class RequestForm(BaseHandler):
    """The forms of the request page: one POST route, the form says what to do. A refused form
    shows the request page again, with the refusal's sentence on it."""

    @web.authenticated
    async def post(self, request_id: str) -> None:
        actor, arg = self.actor(), self.get_body_argument
        action = arg("action", "")
        if action in CONFIRMED_ACTIONS and arg("confirm", "") != "yes":
            request = await self.run(self.service.get_request, actor, request_id)
            permission, question, consequence, button = CONFIRMED_ACTIONS[action]
            if permission in request["allowed"]:
                self.render_page(
                    "confirm.html",
                    r=request,
                    action=action,
                    question=question,
                    consequence=consequence,
                    button=button,
                )
                return
        try:
            await self._act(actor, request_id, action)
        except web.HTTPError as err:
            refusal = getattr(self, "_refusal", None)
            if refusal is None or err.status_code not in _SHOWN_ON_THE_PAGE:
                raise
            self.set_status(err.status_code, reason_phrase(err.status_code))
            typed = {
                "path": arg("path", ""),
                "group": arg("group", "") if action != "contexts" else "",
                "paths": self.get_body_arguments("paths"),
            }
            if action == "contexts":  # what was typed is shown again, not lost
                typed["contexts"] = dict(
                    zip(
                        self.get_body_arguments("group"),
                        zip(
                            self.get_body_arguments("context"),
                            self.get_body_arguments("controls"),
                            strict=False,
                        ),
                        strict=False,
                    )
                )
            await _show_request(self, request_id, refusal=refusal, typed=typed)
            return
        then = arg("then", "")
        if re.fullmatch(r"files/[0-9]{1,12}", then):  # the file page's "and go to the next"
            self.redirect(self.url("requests", request_id, *then.split("/")))
            return
        self.redirect(self.url("requests", request_id))

    async def _act(self, actor: Actor, request_id: str, action: str) -> None:
        arg = self.get_body_argument
        svc = self.service
        if action in REQUEST_ACTIONS:
            await self.run(getattr(svc, REQUEST_ACTIONS[action]), actor, request_id)
        elif action == "add_file":
            await self.run(
                svc.add_file, actor, request_id, arg("path", ""), arg("group", "") or "main"
            )
        elif action == "add_files":
            await self._add_files(actor, request_id)
        elif action == "contexts":
            await self._save_contexts(actor, request_id)
        elif action == "remove_file":
            await self.run(svc.remove_file, actor, request_id, arg("file_id", ""))
        elif action == "context":
            await self.run(
                svc.set_group_context,
                actor,
                request_id,
                arg("group", ""),
                arg("context", ""),
                arg("controls", ""),
            )
        elif action == "vote":
            await self.run(svc.vote, actor, request_id, arg("file_id", ""), arg("vote", ""))
        elif action == "viewed":
            ticked = arg("viewed", "") == "1"
            await self.run(svc.set_viewed, actor, request_id, arg("file_id", ""), ticked)
        elif action == "reset_votes":
            await self.run(svc.reset_votes, actor, request_id)
        elif action == "request_changes_all":
            await self.run(svc.request_changes, actor, request_id)
        elif action == "reexecute":
            parameters = _parameters_field(self, arg("parameters", ""))
            await self.run(
                svc.request_reexecution, actor, request_id, arg("file_id", ""), parameters
            )
        elif action == "comment":
            file_id = arg("file_id", "") or None
            await self.run(
                svc.comment,
                actor,
                request_id,
                arg("body", ""),
                arg("visibility", "public"),
                file_id,
            )
        else:
            self._refusal = {"message": f"Unknown action {action!r}."}
            raise web.HTTPError(400)

    async def _add_files(self, actor: Actor, request_id: str) -> None:
        """The add-files form: the ticked files, or a whole safe-analysis session (the outputs
        its ``results.json`` records, in a group named after the session's folder)."""
        svc, session = self.service, self.get_body_argument("session", None)
        group = self.get_body_argument("group", "") or "main"
        if session is not None:
            request = await self.run(svc.get_request, actor, request_id)
            paths = await self.run(svc.session_outputs, actor, request["project"], session)
            group = session.strip("/").rsplit("/", 1)[-1] or group
        else:
            paths = [p for p in self.get_body_arguments("paths") if p]
        if not paths:
            self._refusal = {"message": "Tick at least one file to add, then press Add."}
            raise web.HTTPError(400)
        as_code = self.get_body_argument("as_code", "") == "1"
        for done, path in enumerate(paths):
            code = as_code and path.lower().endswith(".ipynb")
            try:
                await self.run(svc.add_file, actor, request_id, path, group, as_code=code)
            except web.HTTPError:
                refusal = getattr(self, "_refusal", None)
                if refusal is not None:
                    added = f"{done} of {len(paths)} files added; " if done else ""
                    refusal["message"] = f"{added}{path} was not added: {refusal['message']}"
                raise

    async def _save_contexts(self, actor: Actor, request_id: str) -> None:
        """The one form of every group's context and controls: each group whose text changed
        is saved (nothing typed in one group is lost by saving another)."""
        names = self.get_body_arguments("group")
        contexts = self.get_body_arguments("context")
        controls = self.get_body_arguments("controls")
        if not (len(names) == len(contexts) == len(controls)):
            self._refusal = {"message": "The form was incomplete: reload the page and try again."}
            raise web.HTTPError(400)
        request = await self.run(self.service.get_request, actor, request_id)
        saved = {g["name"]: (g["context"], g["controls"]) for g in request["groups"]}
        for name, context, control in zip(names, contexts, controls, strict=True):
            if saved.get(name) == (context, control):
                continue
            await self.run(
                self.service.set_group_context, actor, request_id, name, context, control
            )


class FilePage(BaseHandler):
    """One file: shown in place and sanitised (no script from a researcher's file runs) to a
    reviewing checker; to the project's members (the author included), only the preview the
    service makes (no cell, label or line of the file: what a browser shows has left the
    enclave)."""

    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        actor = self.actor()
        request = await self.run(self.service.get_request, actor, request_id)
        if "view_file" not in request["allowed"] and "view_preview" in request["allowed"]:
            preview = await self.run(self.service.preview_file, actor, request_id, file_id)
            self.render_page("file_preview.html", r=request, p=preview)
            return
        content = await self.run(self.service.view_file, actor, request_id, file_id)
        entry = next(f for f in request["files"] if str(f["id"]) == str(file_id))
        verdicts, reasons = _cell_verdicts(entry.get("check") or {})
        if actor.is_checker:  # the cells the rules fail or send to review, and suppressed ones
            marks, why = table_cell_marks(content.kind, content.data, self.service.sdc_params)
            verdicts, reasons = {**verdicts, **marks}, {**reasons, **why}
        rendered = render_for_checker(
            content.kind,
            content.data,
            name=content.path,
            raw_url=self.url("requests", request_id, "files", file_id, "raw"),
            cell_verdicts=verdicts,
            cell_reasons=reasons,
        )
        differencing = None
        if actor.is_checker:
            differencing = await self.run(self.service.differencing, actor, request_id, file_id)
        files = request["files"]
        at = next(i for i, f in enumerate(files) if str(f["id"]) == str(file_id))
        group = next((g for g in request.get("groups", []) if g["name"] == entry["group"]), None)
        runs = []
        if entry["kind"] == "notebook":
            runs = [
                x
                for x in await self.run(self.service.list_reexecutions, actor, request_id)
                if x.get("notebook_path") == entry["path"]
            ]
        self.render_page(
            "file.html",
            r=request,
            f=entry,
            rendered=rendered,
            differencing=differencing,
            position=at + 1,
            previous=files[at - 1] if at > 0 else None,
            following=files[at + 1] if at + 1 < len(files) else None,
            group=group,
            runs=runs,
            comments=[c for c in request.get("comments", []) if c.get("file") == entry["path"]],
        )


class RawFile(BaseHandler):
    """The snapshot's bytes for viewers (images), with headers that keep them inert."""

    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        content = await self.run(self.service.view_file, self.actor(), request_id, file_id)
        self._send(content, download=False)

    def _send(self, content: Any, *, download: bool) -> None:
        for name, value in raw_response_headers(content.kind, content.path).items():
            self.set_header(name, value)
        if download:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(content.path).name) or "file"
            self.set_header("Content-Disposition", f'attachment; filename="{safe}"')
        self.set_header("X-Havre-SHA256", content.sha256)
        self.finish(content.data)


class DownloadFile(RawFile):
    """A released file: exactly the approved bytes."""

    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        content = await self.run(self.service.download_released, self.actor(), request_id, file_id)
        self._send(content, download=True)


#: The name of the signed release record inside a release's archive.
ARCHIVE_RECORD = "havre-release-record.json"


class DownloadArchive(BaseHandler):
    """Every released file of a request in one zip archive, in their folders, with the signed
    release record (``havre-release-record.json``): exactly the approved bytes, each download
    audited as for one file."""

    @web.authenticated
    async def get(self, request_id: str) -> None:
        actor = self.actor()
        request = await self.run(self.service.get_request, actor, request_id)
        if "download_released" not in request["allowed"]:
            self._refusal = {"message": "Only a released request's files can be downloaded."}
            raise web.HTTPError(409 if actor.username == request["author"] else 403)
        record = await self.run(self.service.release_record, actor, request_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in request["files"]:
                content = await self.run(
                    self.service.download_released, actor, request_id, entry["id"]
                )
                archive.writestr(content.path, content.data)
            archive.writestr(ARCHIVE_RECORD, json.dumps(record, indent=2, sort_keys=True))
        self.set_header("Content-Type", "application/zip")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Disposition", f'attachment; filename="release-{request_id}.zip"')
        self.finish(buffer.getvalue())


class AuditPage(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        actor = self.actor()
        if not (actor.is_checker or actor.is_admin):
            self._refusal = {"message": "Only output checkers and administrators see the log."}
            raise web.HTTPError(403)
        report = await self.run(self.service.verify_audit)
        request_id = self.get_query_argument("request", "")
        events = await self.run(self.service.request_audit, actor, request_id) if request_id else []
        self.render_page("audit.html", report=report, events=events, request_id=request_id)


def _cell_verdicts(check: dict[str, Any]) -> tuple[dict[tuple[int, int], str], dict]:
    """Per-cell verdicts of the SDC check stored with a file, for highlighting its table."""
    sdc = check.get("sdc") or {}
    verdicts: dict[tuple[int, int], str] = {}
    reasons: dict[tuple[int, int], str] = {}
    for cell in sdc.get("cells", []) if isinstance(sdc.get("cells"), list) else []:
        try:
            key = (int(cell["row"]), int(cell["column"]))
        except (KeyError, TypeError, ValueError):
            continue
        verdicts[key] = str(cell.get("verdict", "review"))
        if cell.get("reason"):
            reasons[key] = str(cell["reason"])
    return verdicts, reasons


def _parameters_field(handler: BaseHandler, text: str) -> object:
    """The papermill parameters typed in the request page's form (a JSON object, or empty)."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        handler._refusal = {"message": 'Parameters must be a JSON object, e.g. {"year": 2024}.'}
        raise web.HTTPError(400) from None


class ReexecutionPage(BaseHandler):
    """One trusted re-execution: the comparison, the verdicts, the executed notebook."""

    @web.authenticated
    async def get(self, request_id: str, reexecution_id: str) -> None:
        actor = self.actor()
        request = await self.run(self.service.get_request, actor, request_id)
        rx = await self.run(self.service.reexecution, actor, request_id, reexecution_id)
        rendered = None
        if rx["executed_notebook_bytes"] is not None:
            executed = rx.get("executed_notebook") or {}
            await self.run(
                self.service.record_reexecution_view,
                actor,
                request_id,
                reexecution_id,
                f"{rx['notebook_path']} (run {reexecution_id[:8]})",
                str(executed.get("sha256", "")),
            )
            rendered = render_for_checker(
                "notebook", rx["executed_notebook_bytes"], name=f"{rx['notebook_path']} (run)"
            )
        self.render_page("reexecution.html", r=request, rx=rx, rendered=rendered)


class BreakGlassPage(BaseHandler):
    """Break-glass sessions, active and recent (checkers and administrators)."""

    @web.authenticated
    async def get(self) -> None:
        sessions = await self.run(break_glass.sessions, self.service, self.actor())
        self.render_page("break_glass.html", sessions=sessions)
