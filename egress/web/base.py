"""What every page and API endpoint of the egress service shares: login through the hub,
the security headers (the CSP of :mod:`egress.files.render`), idempotent writes, and refusals
shown with their sentence (HTML for the pages, JSON under ``api/``).

The core (:class:`egress.operations.facade.EgressService`) decides what is allowed and writes
the audit log; a handler builds the :class:`~egress.domain.policy.Actor` from the hub user (name
and the hub groups Havre manages), runs one operation and shows its result or its refusal.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from jupyterhub.services.auth import HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from egress.domain.policy import Actor, PermissionDenied
from egress.files.render import CHECKER_PAGE_CSP
from egress.operations.facade import (
    EgressError,
    EgressService,
    FileRefused,
    StoredAnswer,
    actor_for,
    page_cursor,
)
from egress.web.hub_oauth import SharedStateHubOAuth

log = logging.getLogger("egress.web")

TEMPLATES = Path(__file__).parent / "templates"
#: requests per page of a list when the client gives no ``limit``, and the most it may ask
DEFAULT_PAGE, MAX_PAGE = 100, 500


def jinja_environment() -> jinja2.Environment:
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
        self._refusal = {"message": exc.reason}
        if isinstance(exc, FileRefused):
            self._refusal["problems"] = exc.problems
        return web.HTTPError(exc.status, reason=reason_phrase(exc.status))

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


def reason_phrase(status: int) -> str:
    return {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(
        status, "Unprocessable Entity" if status == 422 else "Error"
    )


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
