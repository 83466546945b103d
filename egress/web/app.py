"""The egress service's web layer: pages for researchers and checkers, and the JSON API.

A thin shell around :class:`egress.operations.facade.EgressService`: every handler builds the
:class:`~egress.domain.policy.Actor` from the hub user (name and the hub groups Havre manages),
calls one core operation and shows its result. The core decides what is allowed and writes the audit
log; refusals come back as ``PermissionDenied`` / ``EgressError`` with an HTTP status and a
sentence, shown as they are.

Routes (under the service prefix, ``/services/egress/``):

    pages   /                            requests I can see; my projects; the checkers' queue
            /projects/<project>/new      start a request (form posts to /requests)
            /requests/<id>               a request: files, checks, votes, comments, actions
            /requests/<id>/files/<fid>   one file shown in place (sanitised), /raw its bytes:
                                         checkers once submitted; members get a preview
            /requests/<id>/files/<fid>/download   a released file
            /audit                       the audit log and its verification
            /break-glass                 break-glass sessions (checkers, administrators)
    api     /api/...                     JSON, described by /api/openapi.json
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from jupyterhub.services.auth import HubOAuthenticated
from jupyterhub.utils import url_path_join
from prometheus_client import CollectorRegistry
from tornado import ioloop, web

from egress.domain.policy import Actor, PermissionDenied
from egress.domain.workflow import RequestState
from egress.files.render import CHECKER_PAGE_CSP, raw_response_headers, render_for_checker
from egress.monitoring.metrics import EgressCollector
from egress.monitoring.refusals import RefusalTally, reason_of
from egress.monitoring.verify_record import FILE_NAME as VERIFY_RECORD
from egress.operations import break_glass
from egress.operations.facade import (
    EgressError,
    EgressService,
    FileRefused,
    StoredAnswer,
    actor_for,
    page_cursor,
)
from egress.web.hub_oauth import SharedStateHubOAuth, SharedStateOAuthCallback
from egress.web.metrics import METRICS_PATH, MetricsHandler
from egress.web.openapi import REQUEST_ACTIONS, openapi_document

log = logging.getLogger("egress.web")

TEMPLATES = Path(__file__).parent / "templates"
_ID = r"[A-Za-z0-9_-]{1,64}"
#: requests per page of a list when the client gives no ``limit``, and the most it may ask
DEFAULT_PAGE, MAX_PAGE = 100, 500


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = lambda n: f"{n:,} B" if n < 10_000 else f"{n / 1024:,.0f} KiB"
    return env


#: Methods that change something: each accepts an ``Idempotency-Key``, so a retried write
#: (a lost answer, a double click) is answered once and never done twice.
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: The header API clients send, and the hidden field every form of the pages carries.
IDEMPOTENCY_HEADER, IDEMPOTENCY_FIELD = "Idempotency-Key", "_idempotency_key"


class FormTokens:
    """What ``{{ xsrf | safe }}`` writes into a form: the XSRF field and a fresh idempotency
    key, a new one for each form rendered (a resent form is then a retry of that form)."""

    def __init__(self, xsrf_html: str) -> None:
        self.xsrf_html = xsrf_html

    def __html__(self) -> str:
        key = secrets.token_urlsafe(18)
        return f'{self.xsrf_html}<input type="hidden" name="{IDEMPOTENCY_FIELD}" value="{key}">'

    __str__ = __html__


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Login through the hub, security headers, and refusals shown with their sentence.

    Writes are idempotent when the client sends a key (the ``Idempotency-Key`` header, or the
    ``_idempotency_key`` field every form carries): the first answer (status, body, redirect)
    is kept per user and key for 24 hours, and a retry of the same request gets it again
    without running anything; the same key with another request is refused (422).
    """

    hub_auth_class = SharedStateHubOAuth  # logins work whichever worker the hub sends back to
    _idempotency: tuple[Actor, str] | None = None

    async def prepare(self) -> None:
        if self.request.method not in WRITE_METHODS:
            return
        key = self.request.headers.get(IDEMPOTENCY_HEADER) or self.get_body_argument(
            IDEMPOTENCY_FIELD, ""
        )
        if not key or not self.current_user:
            return  # no key: an ordinary write; no user: the handler refuses it
        actor = self.actor()
        stored = await self.run(self.service.idempotency_begin, actor, key, self._fingerprint())
        if stored is None:
            self._idempotency = (actor, key)
            return
        self.set_status(stored.status)
        if stored.content_type:
            self.set_header("Content-Type", stored.content_type)
        if stored.location:
            self.set_header("Location", stored.location)
        self.set_header("Idempotent-Replayed", "true")
        self.finish(stored.body)

    def _fingerprint(self) -> str:
        """The request a key was first sent with: method, address and body (a form's fields
        without its XSRF token and key, which a retry may send anew)."""
        digest = hashlib.sha256(f"{self.request.method} {self.request.uri}\n".encode())
        if self.request.body_arguments:
            fields = {
                name: [v.decode("utf-8", "replace") for v in values]
                for name, values in sorted(self.request.body_arguments.items())
                if name not in ("_xsrf", IDEMPOTENCY_FIELD)
            }
            digest.update(json.dumps(fields, sort_keys=True).encode())
        else:
            digest.update(self.request.body or b"")
        return digest.hexdigest()

    def finish(self, chunk: str | bytes | dict | None = None) -> Any:
        if self._idempotency is not None and not self._finished:
            actor, key = self._idempotency
            self._idempotency = None
            self._keep_answer(actor, key, chunk)
        return super().finish(chunk)

    def _keep_answer(self, actor: Actor, key: str, chunk: str | bytes | dict | None) -> None:
        status = self.get_status()
        try:
            if status >= 500:  # not an answer: let a retry run the write again
                self.service.idempotency_abandon(actor, key)
                return
            if isinstance(chunk, dict):
                chunk = json.dumps(chunk)
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            body = b"".join(self._write_buffer) + (chunk or b"")
            answer = StoredAnswer(
                status,
                str(self._headers.get("Content-Type", "")),
                str(self._headers.get("Location", "")),
                body.decode("utf-8", "replace"),
            )
            self.service.idempotency_finish(actor, key, answer)
        except Exception:  # the answer still goes out; a retry then finds the key running
            log.exception("could not keep the answer of idempotency key %s", key)

    @property
    def service(self) -> EgressService:
        return self.settings["egress_service"]

    @property
    def prefix(self) -> str:
        return self.settings["egress_prefix"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CHECKER_PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        # a page of the same origin (a notebook's) that opens this one gets no handle on it
        self.set_header("Cross-Origin-Opener-Policy", "noopener-allow-popups")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    def get_current_user(self) -> Any:
        # HubAuth's XSRF check can ask for the current user again, from its worker thread,
        # while this very call waits on that thread (JupyterHub 6.1.1): answer that inner
        # question with "nobody" instead of waiting forever.
        if getattr(self, "_resolving_user", False):
            return None
        self._resolving_user = True
        try:
            return super().get_current_user()
        finally:
            self._resolving_user = False

    def actor(self) -> Actor:
        user = self.current_user
        if not user:
            raise web.HTTPError(403)
        return actor_for(self.service.enclave, user["name"], user.get("groups") or [])

    def call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a core operation here, on the IOLoop's thread (quick ones only: see ``run``)."""
        try:
            return operation(*args, **kwargs)
        except (PermissionDenied, EgressError) as exc:
            raise self._refused(exc) from None

    async def run(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a core operation in the worker's thread pool, so the IOLoop keeps answering
        while it waits on the database; its refusals become HTTP errors with its sentence."""
        pool = self.settings["egress_executor"]
        job = functools.partial(operation, *args, **kwargs)
        try:
            return await ioloop.IOLoop.current().run_in_executor(pool, job)
        except (PermissionDenied, EgressError) as exc:
            raise self._refused(exc) from None

    def _refused(self, exc: PermissionDenied | EgressError) -> web.HTTPError:
        self.settings["egress_refusals"].add(reason_of(exc))
        self._refusal = {"message": exc.reason}
        if isinstance(exc, FileRefused):
            self._refusal["problems"] = exc.problems
        return web.HTTPError(exc.status, reason=_reason(exc.status))

    def url(self, *parts: str) -> str:
        return url_path_join(self.prefix, *[quote(str(p), safe="/") for p in parts])

    async def page_of_requests(self, **filters: Any) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the requests list (``?limit=``, ``?after=``) and the next page's cursor."""
        raw = self.get_query_argument("limit", "")
        if raw and not (raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
            self._refusal = {"message": f"limit must be a whole number from 1 to {MAX_PAGE}."}
            raise web.HTTPError(400)
        limit = int(raw) if raw else DEFAULT_PAGE
        items = await self.run(
            self.service.list_requests,
            self.actor(),
            limit=limit + 1,
            after=self.get_query_argument("after", None),
            **filters,
        )
        if len(items) > limit:
            return items[:limit], page_cursor(items[limit - 1])
        return items, None

    def next_page_url(self, after: str) -> str:
        """This request's URL with ``after`` set: the next page of a list."""
        query = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        query["after"] = after
        return f"{self.request.path}?{urlencode(query)}"

    def render_page(self, template: str, **context: Any) -> None:
        user = self.current_user or {}
        html = (
            self.settings["jinja"]
            .get_template(template)
            .render(
                prefix=self.prefix,
                url=self.url,
                user=user.get("name", ""),
                actor=self.actor() if user else None,
                xsrf=FormTokens(self.xsrf_form_html()),
                hub_home="/hub/home",
                **context,
            )
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        refusal = getattr(self, "_refusal", None) or {
            "message": GENERIC_REFUSALS.get(status_code, self._reason)
        }
        if self.request.path.startswith(url_path_join(self.prefix, "api")):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, **refusal}))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        html = (
            self.settings["jinja"]
            .get_template("error.html")
            .render(prefix=self.prefix, status=status_code, refusal=refusal, back=self.url())
        )
        self.finish(html)


#: What a refusal says when no operation gave a sentence of its own.
GENERIC_REFUSALS = {
    400: "The request is malformed.",
    403: "Not allowed: you are not signed in for this, or the form or its security token "
    "(_xsrf) is missing or out of date. Reload the page and try again.",
    404: "There is no such page or API endpoint.",
    405: "This method is not allowed on this address.",
    413: "The request body is too large.",
}
#: The largest request body the API reads (file contents never come through it).
MAX_API_BODY = 1024 * 1024


def _reason(status: int) -> str:
    return {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(
        status, "Unprocessable Entity" if status == 422 else "Error"
    )


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


class NewRequestPage(BaseHandler):
    @web.authenticated
    async def get(self, project: str) -> None:
        self.render_page("new_request.html", project=project)


class RequestsForm(BaseHandler):
    @web.authenticated
    async def post(self) -> None:
        summary = await self.run(
            self.service.create_request,
            self.actor(),
            self.get_body_argument("project", ""),
            self.get_body_argument("title", ""),
        )
        self.redirect(self.url("requests", summary["id"]))


async def _show_request(
    handler: BaseHandler,
    request_id: str,
    refusal: dict[str, Any] | None = None,
    typed: dict[str, str] | None = None,
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
        reexecutions=reexecutions,
        refusal=refusal,
        typed=typed or {},
    )


class RequestPage(BaseHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        await _show_request(self, request_id)


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
            self.set_status(err.status_code, _reason(err.status_code))
            typed = {"path": arg("path", ""), "group": arg("group", "")}
            await _show_request(self, request_id, refusal=refusal, typed=typed)
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
        self.render_page(
            "file.html", r=request, f=entry, rendered=rendered, differencing=differencing
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


# --------------------------------------------------------------------------------- API


class ApiHandler(BaseHandler):
    async def prepare(self) -> None:
        size = int(self.request.headers.get("Content-Length") or len(self.request.body or b""))
        if size > MAX_API_BODY:
            self._refusal = {"message": f"The request body is larger than {MAX_API_BODY} bytes."}
            raise web.HTTPError(413)
        await super().prepare()

    def get_login_url(self) -> str:
        # A client that sent a token is refused, with the reason (a token that doesn't work
        # won't work better after a login page); a browser without a session yet is sent
        # through the hub's login, as for the pages.
        if self.request.headers.get("Authorization"):
            self._refusal = {"message": "Not signed in: the token is invalid or expired."}
            raise web.HTTPError(403)
        return super().get_login_url()

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except (ValueError, RecursionError):
            self._refusal = {"message": "The body must be a JSON object."}
            raise web.HTTPError(400) from None
        if not isinstance(data, dict):
            self._refusal = {"message": "The body must be a JSON object."}
            raise web.HTTPError(400)
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))


class WhoAmIApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        actor = self.actor()
        self.send(
            {
                "name": actor.username,
                "projects": sorted(actor.projects),
                "output_checker": actor.is_checker,
            }
        )


class OutputsApi(ApiHandler):
    @web.authenticated
    async def get(self, project: str) -> None:
        self.send(await self.run(self.service.list_outputs, self.actor(), project))


class RequestsApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        arg = self.get_query_argument
        older = arg("older_than_days", "")
        try:
            days = float(older) if older else None
            if days is not None and not 0 <= days <= 36500:
                raise ValueError
        except ValueError:
            self._refusal = {"message": "older_than_days must be a number of days, 0 to 36500."}
            raise web.HTTPError(400) from None
        items, after = await self.page_of_requests(
            project=arg("project", None),
            state=arg("state", None),
            mine_to_review=arg("mine_to_review", "") in ("1", "true"),
            older_than=timedelta(days=days) if days is not None else None,
        )
        if after is not None:
            self.set_header("Link", f'<{self.next_page_url(after)}>; rel="next"')
        self.send(items)

    @web.authenticated
    async def post(self) -> None:
        body = self.body()
        summary = await self.run(
            self.service.create_request,
            self.actor(),
            str(body.get("project", "")),
            str(body.get("title", "")),
        )
        self.send(summary, 201)


class RequestApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        self.send(await self.run(self.service.get_request, self.actor(), request_id))


class RequestActionApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str, action: str) -> None:
        if action not in REQUEST_ACTIONS:
            raise web.HTTPError(404)
        method = getattr(self.service, REQUEST_ACTIONS[action])
        await self.run(method, self.actor(), request_id)
        # the request as it now is (a release's signed record is in its "release" field)
        self.send(await self.run(self.service.get_request, self.actor(), request_id))


class FilesApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str) -> None:
        body = self.body()
        await self.run(
            self.service.add_file,
            self.actor(),
            request_id,
            str(body.get("path", "")),
            str(body.get("group", "") or "main"),
        )
        self.send(await self.run(self.service.get_request, self.actor(), request_id), 201)


class FilePreviewApi(ApiHandler):
    """The preview of a file the service makes for members (audited); never its bytes."""

    @web.authenticated
    async def get(self, request_id: str, file_id: str) -> None:
        self.send(await self.run(self.service.preview_file, self.actor(), request_id, file_id))


class FileApi(ApiHandler):
    @web.authenticated
    async def delete(self, request_id: str, file_id: str) -> None:
        await self.run(self.service.remove_file, self.actor(), request_id, file_id)
        self.send(await self.run(self.service.get_request, self.actor(), request_id))


class VoteApi(ApiHandler):
    @web.authenticated
    async def put(self, request_id: str, file_id: str) -> None:
        vote = str(self.body().get("vote", ""))
        self.send(await self.run(self.service.vote, self.actor(), request_id, file_id, vote))


class BulkVotesApi(ApiHandler):
    """Bulk votes on a request's files, in the safe direction only: request changes, or reset."""

    BULK = {"request_changes": "request_changes", "undecided": "reset_votes"}

    @web.authenticated
    async def post(self, request_id: str) -> None:
        body = self.body()
        vote = body.get("vote")
        if not isinstance(vote, str) or vote not in self.BULK:
            self._refusal = {
                "message": "Bulk votes go in the safe direction only: vote is request_changes "
                "or undecided (approve each file on its own, after looking at it)."
            }
            raise web.HTTPError(400)
        file_ids = body.get("file_ids")
        if file_ids is not None and not (
            isinstance(file_ids, list)
            and 0 < len(file_ids) <= 1000
            and all(type(i) is int and i > 0 for i in file_ids)
        ):
            self._refusal = {"message": "file_ids must be a list of 1 to 1000 file ids."}
            raise web.HTTPError(400)
        method = getattr(self.service, self.BULK[vote])
        changed = await self.run(method, self.actor(), request_id, file_ids)
        self.send({"changed": changed})


class GroupApi(ApiHandler):
    @web.authenticated
    async def put(self, request_id: str, group: str) -> None:
        body = self.body()
        await self.run(
            self.service.set_group_context,
            self.actor(),
            request_id,
            group,
            str(body.get("context", "")),
            str(body.get("controls", "")),
        )
        self.send(await self.run(self.service.get_request, self.actor(), request_id))


class CommentsApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str) -> None:
        body = self.body()
        self.send(
            await self.run(
                self.service.comment,
                self.actor(),
                request_id,
                str(body.get("body", "")),
                str(body.get("visibility", "public")),
                body.get("file_id"),
            ),
            201,
        )


class RecordApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        record = await self.run(self.service.release_record, self.actor(), request_id)
        if record is None:
            self._refusal = {"message": f"Request {request_id} has no release record."}
            raise web.HTTPError(404)
        self.send(record)


class AuditVerifyApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        actor = self.actor()
        if not (actor.is_checker or actor.is_admin):
            self._refusal = {"message": "Only output checkers and administrators verify the log."}
            raise web.HTTPError(403)
        report = await self.run(self.service.verify_audit)
        self.send(
            {
                "ok": report.ok,
                "events_checked": report.events_checked,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
            }
        )


# ------------------------------------------------------------------ trusted re-execution


def _parameters_field(handler: BaseHandler, text: str) -> object:
    """The papermill parameters typed in the request page's form (a JSON object, or empty)."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        handler._refusal = {"message": 'Parameters must be a JSON object, e.g. {"year": 2024}.'}
        raise web.HTTPError(400) from None


def _reexecution_for_json(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in detail.items() if k != "executed_notebook_bytes"}


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


class ReexecuteApi(ApiHandler):
    @web.authenticated
    async def post(self, request_id: str, file_id: str) -> None:
        body = self.body()
        entry = await self.run(
            self.service.request_reexecution,
            self.actor(),
            request_id,
            file_id,
            body.get("parameters"),
        )
        self.send(entry, 202)


class ReexecutionsApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str) -> None:
        self.send(await self.run(self.service.list_reexecutions, self.actor(), request_id))


class ReexecutionApi(ApiHandler):
    @web.authenticated
    async def get(self, request_id: str, reexecution_id: str) -> None:
        detail = await self.run(self.service.reexecution, self.actor(), request_id, reexecution_id)
        self.send(_reexecution_for_json(detail))


class BreakGlassPage(BaseHandler):
    """Break-glass sessions, active and recent (checkers and administrators)."""

    @web.authenticated
    async def get(self) -> None:
        sessions = await self.run(break_glass.sessions, self.service, self.actor())
        self.render_page("break_glass.html", sessions=sessions)


class BreakGlassApi(ApiHandler):
    @web.authenticated
    async def get(self) -> None:
        self.send(await self.run(break_glass.sessions, self.service, self.actor()))


class BreakGlassEventsApi(web.RequestHandler):
    """The hub's break-glass reports (``egress.operations.break_glass``): no user session, the
    hub's key.

    Not a cookie-authenticated page, so no XSRF token: a browser can't send the key.
    """

    def check_xsrf_cookie(self) -> None:
        return None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = getattr(self, "_refusal", None) or GENERIC_REFUSALS.get(status_code, "Error.")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def _refuse(self, status: int, message: str) -> web.HTTPError:
        self._refusal = message
        return web.HTTPError(status, reason=_reason(status))

    async def post(self) -> None:
        token = self.settings.get("hub_api_token", "")
        if not break_glass.key_matches(self.request.headers.get("Authorization"), token):
            raise self._refuse(403, "Only the hub reports break-glass events (a wrong key).")
        if len(self.request.body or b"") > 16 * 1024:
            raise self._refuse(413, "The report is larger than 16 KiB.")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise self._refuse(400, "The body must be a JSON object.") from None
        pool = self.settings["egress_executor"]
        job = functools.partial(break_glass.record, self.settings["egress_service"], body)
        try:
            written = await ioloop.IOLoop.current().run_in_executor(pool, job)
        except (PermissionDenied, EgressError) as exc:
            raise self._refuse(exc.status, exc.reason) from None
        self.set_status(201)
        self.finish(json.dumps(written))


class ApiNotFound(ApiHandler):
    """Any other address under api/: a JSON refusal, like the rest of the API."""

    def prepare(self) -> None:
        self._refusal = {"message": f"There is no API endpoint {self.request.path}."}
        raise web.HTTPError(404)


class OpenApiDocument(web.RequestHandler):
    """The API's OpenAPI document (public: it holds no data)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(openapi_document(self.settings["egress_prefix"])))


class HealthHandler(web.RequestHandler):
    """Liveness for the stack launcher and Ansible (no login, no data)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "ok"}))


def make_app(
    service: EgressService,
    prefix: str,
    cookie_secret: bytes,
    *,
    threads: int = 1,
    oauth_state_dir: Path | None = None,
    refusals: RefusalTally | None = None,
) -> web.Application:
    """The tornado application of the egress service, routes under ``prefix``.

    ``threads``: the pool that runs the core's operations (database work) off the IOLoop. One
    by default: the operations are mostly Python, and more threads in one process were measured
    slower (they contend for the GIL; ``benchmarks/egress-load-README.md``); more cores are
    used by more worker processes instead.
    ``oauth_state_dir``: where logins in progress are kept when several worker processes serve
    (see :mod:`egress.web.hub_oauth`); None keeps them in this process.
    ``refusals``: the tally the service's refusals are counted in (shared by the workers);
    None counts in this process. ``/metrics`` (outside the prefix) serves the metrics.
    """
    refusals = refusals or RefusalTally()
    if oauth_state_dir is not None:
        SharedStateHubOAuth.instance().oauth_state_dir = str(oauth_state_dir)

    def route(path: str) -> str:
        return url_path_join(prefix, path)

    r, f = rf"(?P<request_id>{_ID})", r"(?P<file_id>[0-9]{1,12})"
    x = r"(?P<reexecution_id>[0-9a-f]{32})"
    return web.Application(
        [
            (METRICS_PATH, MetricsHandler),
            (route("healthz"), HealthHandler),
            (route("oauth_callback"), SharedStateOAuthCallback),
            (route("api/openapi.json"), OpenApiDocument),
            (route("api/whoami"), WhoAmIApi),
            (route(r"api/projects/([a-z0-9-]{1,40})/outputs"), OutputsApi),
            (route("api/requests"), RequestsApi),
            (route(f"api/requests/{r}"), RequestApi),
            (route(f"api/requests/{r}/files"), FilesApi),
            (route(f"api/requests/{r}/files/{f}"), FileApi),
            (route(f"api/requests/{r}/files/{f}/vote"), VoteApi),
            (route(f"api/requests/{r}/files/{f}/preview"), FilePreviewApi),
            (route(f"api/requests/{r}/groups/(?P<group>[^/]{{1,64}})"), GroupApi),
            (route(f"api/requests/{r}/comments"), CommentsApi),
            (route(f"api/requests/{r}/votes"), BulkVotesApi),
            (route(f"api/requests/{r}/record"), RecordApi),
            (route(f"api/requests/{r}/files/{f}/reexecute"), ReexecuteApi),
            (route(f"api/requests/{r}/reexecutions"), ReexecutionsApi),
            (route(f"api/requests/{r}/reexecutions/{x}"), ReexecutionApi),
            (route(f"api/requests/{r}/(?P<action>[a-z]+)"), RequestActionApi),
            (route("api/audit/verify"), AuditVerifyApi),
            (route("api/break-glass"), BreakGlassApi),
            (route("api/break-glass/events"), BreakGlassEventsApi),
            (route("api/.*"), ApiNotFound),
            (route("projects/([a-z0-9-]{1,40})/new"), NewRequestPage),
            (route("requests"), RequestsForm),
            (route(f"requests/{r}"), RequestPage),
            (route(f"requests/{r}/do"), RequestForm),
            (route(f"requests/{r}/files/{f}"), FilePage),
            (route(f"requests/{r}/files/{f}/raw"), RawFile),
            (route(f"requests/{r}/files/{f}/download"), DownloadFile),
            (route(f"requests/{r}/reexecutions/{x}"), ReexecutionPage),
            (route("audit"), AuditPage),
            (route("break-glass"), BreakGlassPage),
            (prefix, IndexPage),
        ],
        cookie_secret=cookie_secret,
        # CSRF: HubOAuth checks JupyterHub's _xsrf token on every cookie-authenticated
        # request that changes something (forms carry it; API clients send X-XSRFToken).
        xsrf_cookies=True,
        egress_service=service,
        egress_executor=ThreadPoolExecutor(threads, thread_name_prefix="egress-core"),
        egress_prefix=prefix,
        jinja=_jinja(),
        # the hub's break-glass reports carry a key derived from it (egress.operations.break_glass)
        hub_api_token=os.environ.get("JUPYTERHUB_API_TOKEN", ""),
        egress_refusals=refusals,
        # (no service: the route table alone, as tests/web_coverage.py reads it)
        metrics_registry=metrics_registry(service, refusals) if service is not None else None,
    )


def metrics_registry(service: EgressService, refusals: RefusalTally) -> CollectorRegistry:
    """A registry of this process holding the service's collector (and nothing else)."""
    registry = CollectorRegistry(auto_describe=False)
    checkpoints = service.checkpoint_path
    registry.register(
        EgressCollector(
            service.engine,
            clock=service.now,
            verify_record=checkpoints.with_name(VERIFY_RECORD) if checkpoints else None,
            refusals=refusals,
        )
    )
    return registry


def make_metrics_app(app: web.Application) -> web.Application:
    """An application serving ``/metrics`` only, with ``app``'s service and collector: the
    port ``havre up`` may publish on the host for a Prometheus server outside the enclave's
    networks (nothing else of the service is reachable there)."""
    return web.Application(
        [(METRICS_PATH, MetricsHandler)],
        egress_service=app.settings["egress_service"],
        egress_executor=app.settings["egress_executor"],
        metrics_registry=app.settings["metrics_registry"],
    )
