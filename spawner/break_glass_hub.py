"""Break glass, the hub's side: the activation page, the checks, the audit reports.

See :mod:`havre.enclave.break_glass` for the rules. Here, inside the hub process:

* ``/hub/break-glass`` (:class:`BreakGlassHandler`): an eligible user (hub group
  ``break-glass``, from the identity provider) activates break glass with a reason, a target and
  a duration, or ends it. Activation is reported to the egress service's audit log first
  (:class:`AuditReporter`); only when that write succeeded is the user put in the
  ``server-access`` group. A failed write refuses the activation (503, a sentence).
* every hub request (:func:`enforce`, run before JupyterHub resolves the request's scopes, so
  also the token checks notebook servers make for each request they get): a user in
  ``server-access`` without an open window is taken out of it there and then, whatever the
  periodic sweep has done yet, and their OAuth tokens for other users' servers are deleted.
* the hub's OAuth authorization of a notebook server (:func:`gate_oauth`): opening a server
  that is not one's own needs an open window whose target covers it; each authorization is
  reported as a use (refused, 503, when the report can't be written).
* a sweep every :data:`SWEEP_SECONDS` ends expired windows and retries reports of ends that
  could not be written.
* logout and the identity provider (:func:`end_window`, :func:`adjust_groups`): logout ends
  the window; a refresh that no longer finds the user in the provider's group ends it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop, PeriodicCallback

from havre.enclave.break_glass import (
    BreakGlassError,
    Window,
    WindowStore,
    hub_key,
    iso,
    open_window,
)
from havre.enclave.config import BREAK_GLASS_HUB_GROUP, SERVER_ACCESS_HUB_GROUP
from havre.enclave.logs import security_event

log = logging.getLogger("havre.break_glass")

#: how often expired windows are ended by the sweep (the check at use time needs no sweep)
SWEEP_SECONDS = 10
AUDIT_DOWN = (
    "Break glass can't be {what} right now: the audit log (the egress service) did not record "
    "it, and break glass is never used unrecorded. Try again in a minute; if it lasts, tell "
    "the enclave's administrator."
)
NOT_ELIGIBLE = (
    "You are not in a break-glass group at the identity provider, so you can't activate break "
    "glass. Administrators can't grant it either: ask for the group at the identity provider."
)


def _now() -> datetime:
    return datetime.now(UTC)


class AuditReporter:
    """Posts break-glass steps to the egress service (``api/break-glass/events``)."""

    def __init__(self, url: str, api_token: str, timeout: float = 10.0) -> None:
        self.url = url
        self.key = hub_key(api_token)
        self.timeout = timeout
        self.pending: list[dict[str, Any]] = []  # ends to write again (never dropped)

    async def report(self, event: dict[str, Any]) -> None:
        """Write one step; raises ``RuntimeError`` when it was not recorded."""
        request = HTTPRequest(
            self.url,
            method="POST",
            body=json.dumps(event),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except Exception as err:
            raise RuntimeError(f"egress service unreachable: {err}") from err
        if response.code != 201:
            raise RuntimeError(f"egress service answered {response.code}: {response.body[:300]!r}")

    async def report_later(self, event: dict[str, Any]) -> None:
        """Write a step that must not block (an end): kept and retried until written."""
        try:
            await self.report(event)
        except RuntimeError as err:
            security_event(
                log,
                "break_glass.unrecorded",
                "break glass: %s not recorded yet (%s); will retry",
                event["event"],
                err,
                user=event.get("user"),
                session_id=event.get("session"),
            )
            self.pending.append(event)

    async def flush(self) -> None:
        waiting, self.pending = self.pending, []
        for event in waiting:
            await self.report_later(event)


class BreakGlass:
    """The hub's break-glass state: the open windows and the audit reporter."""

    def __init__(self, store: WindowStore, reporter: AuditReporter, max_minutes: int) -> None:
        self.store = store
        self.reporter = reporter
        self.max_minutes = max_minutes
        self.clock: Callable[[], datetime] = _now


#: the hub's one instance (set by :func:`configure`); None: break glass is not configured
STATE: BreakGlass | None = None


def _group(db: Any, name: str) -> Any:
    group = orm.Group.find(db, name)
    if group is None:
        group = orm.Group(name=name)
        db.add(group)
    return group


def _in_group(orm_user: Any, name: str) -> bool:
    return any(g.name == name for g in orm_user.groups)


def revoke_access(db: Any, orm_user: Any) -> int:
    """Take ``orm_user`` out of ``server-access`` and delete their OAuth tokens for other
    users' servers; returns how many tokens went."""
    orm_user.groups = [g for g in orm_user.groups if g.name != SERVER_ACCESS_HUB_GROUP]
    ended = 0
    for token in db.query(orm.APIToken).filter(orm.APIToken.user_id == orm_user.id):
        client = token.oauth_client
        spawner = getattr(client, "spawner", None) if client is not None else None
        if spawner is not None and spawner.user_id != orm_user.id:
            db.delete(token)
            ended += 1
    db.commit()
    return ended


def _end_event(window: Window, why: str) -> dict[str, Any]:
    return {"event": "ended", "session": window.session, "user": window.user, "why": why}


async def end_window(db: Any, orm_user: Any, why: str) -> Window | None:
    """End ``orm_user``'s window (if any) and their access; the end is reported."""
    state = STATE
    if state is None:
        return None
    window = state.store.pop(orm_user.name)
    if window is not None or _in_group(orm_user, SERVER_ACCESS_HUB_GROUP):
        revoke_access(db, orm_user)
    if window is not None:
        security_event(
            log,
            "break_glass.ended",
            "break glass: %s's window ended (%s)",
            orm_user.name,
            why,
            user=orm_user.name,
            session_id=window.session,
            why=why,
        )
        await state.reporter.report_later(_end_event(window, why))
    return window


def enforce(handler: Any) -> None:
    """Before a request's scopes are resolved: no ``server-access`` without an open window."""
    state = STATE
    user = handler.current_user if state is not None else None
    orm_user = getattr(user, "orm_user", None)  # services have none
    if state is None or orm_user is None:
        return
    now = state.clock()
    if state.store.open_for(orm_user.name, now) is not None:
        return
    window = state.store.windows.get(orm_user.name)
    if window is None and not _in_group(orm_user, SERVER_ACCESS_HUB_GROUP):
        return
    tokens = revoke_access(handler.db, orm_user)
    if window is not None:
        state.store.pop(orm_user.name)
        IOLoop.current().add_callback(state.reporter.report_later, _end_event(window, "expired"))
    security_event(
        log,
        "break_glass.ended",
        "break glass: %s has no open window: access removed (%d tokens)",
        user.name,
        tokens,
        user=user.name,
        session_id=window.session if window is not None else None,
        why="expired",
    )


def adjust_groups(auth_model: dict[str, Any]) -> dict[str, Any]:
    """The groups a sign-in or refresh gives: ``server-access`` only with an open window of an
    eligible user; a window of a user no longer eligible is ended."""
    groups = set(auth_model.get("groups") or [])
    groups.discard(SERVER_ACCESS_HUB_GROUP)  # never from the provider's claims
    state = STATE
    name = auth_model.get("name")
    if state is not None and name:
        window = state.store.open_for(name, state.clock())
        if window is not None and BREAK_GLASS_HUB_GROUP in groups:
            groups.add(SERVER_ACCESS_HUB_GROUP)
        elif name in state.store.windows:
            ended = state.store.pop(name)
            why = "left the group" if BREAK_GLASS_HUB_GROUP not in groups else "expired"
            if ended is not None:
                security_event(
                    log,
                    "break_glass.ended",
                    "break glass: %s's window ended (%s)",
                    name,
                    why,
                    user=name,
                    session_id=ended.session,
                    why=why,
                )
                IOLoop.current().add_callback(state.reporter.report_later, _end_event(ended, why))
    auth_model["groups"] = sorted(groups)
    return auth_model


async def gate_oauth(handler: Any) -> None:
    """The hub's OAuth authorization: another user's server needs an open, covering window;
    each GET (one authorization) is reported as a use, or refused when it can't be."""
    user = handler.current_user
    given = set(handler.get_arguments("client_id"))  # the query's and a posted form's
    if len(given) > 1:
        raise web.HTTPError(400, "An authorization names one client (client_id), not several.")
    client_id = given.pop() if given else ""
    if getattr(user, "orm_user", None) is None or not client_id:
        return
    client = handler.db.query(orm.OAuthClient).filter_by(identifier=client_id).one_or_none()
    spawner = getattr(client, "spawner", None) if client is not None else None
    if spawner is None or spawner.user_id == user.orm_user.id:
        return  # a service, or the user's own server
    owner, server = spawner.user.name, spawner.name
    state = STATE
    window = state.store.open_for(user.name, state.clock()) if state is not None else None
    if window is None or not _in_group(user.orm_user, SERVER_ACCESS_HUB_GROUP):
        security_event(
            log,
            "break_glass.refused",
            "break glass: %s refused %s/%s (no open window)",
            user.name,
            owner,
            server,
            user=user.name,
            target=f"{owner}/{server}",
        )
        raise web.HTTPError(
            403,
            f"{owner}'s server {server} is not yours. Only staff in a break-glass group at the "
            "identity provider can open it, after activating break glass with a reason at "
            "/hub/break-glass.",
        )
    if not window.covers(owner, server):
        security_event(
            log,
            "break_glass.refused",
            "break glass: %s refused %s/%s (outside the window's %s)",
            user.name,
            owner,
            server,
            window.target,
            user=user.name,
            session_id=window.session,
            target=f"{owner}/{server}",
        )
        raise web.HTTPError(
            403,
            f"Your break-glass window covers {window.target}, not {owner}/{server}. End it "
            "and activate a new one naming this server.",
        )
    if handler.request.method == "GET":
        try:
            await state.reporter.report(
                {
                    "event": "used",
                    "session": window.session,
                    "user": user.name,
                    "server": f"{owner}/{server}",
                }
            )
        except RuntimeError as err:
            security_event(
                log,
                "break_glass.unrecorded",
                "break glass: use by %s not recorded: %s",
                user.name,
                err,
                user=user.name,
                session_id=window.session,
            )
            raise web.HTTPError(503, AUDIT_DOWN.format(what="used")) from None
        security_event(
            log,
            "break_glass.used",
            "break glass: %s opens %s/%s (%s)",
            user.name,
            owner,
            server,
            window.session,
            user=user.name,
            session_id=window.session,
            target=f"{owner}/{server}",
        )


class BreakGlassHandler(BaseHandler):
    """``/hub/break-glass``: activate (reason, target, minutes) or end break glass."""

    def _state(self) -> BreakGlass:
        if STATE is None:
            raise web.HTTPError(404, "Break glass is not configured in this enclave.")
        return STATE

    def _eligible(self) -> bool:
        orm_user = getattr(self.current_user, "orm_user", None)  # a service has none
        return orm_user is not None and _in_group(orm_user, BREAK_GLASS_HUB_GROUP)

    async def _page(self, status: int = 200, error: str = "", form: dict | None = None) -> None:
        state = self._state()
        self.set_status(status)
        window = state.store.open_for(self.current_user.name, state.clock())
        html = await self.render_template(
            "break_glass.html",
            window=window,
            eligible=self._eligible(),
            max_minutes=state.max_minutes,
            error=error,
            form=form or {},
        )
        self.finish(html)

    async def _refuse_not_eligible(self) -> None:
        name = self.current_user.name
        security_event(
            log,
            "break_glass.refused",
            "break glass: %s is not eligible (no break-glass group)",
            name,
            user=name,
        )
        await self._page(403, NOT_ELIGIBLE)

    @web.authenticated
    async def get(self) -> None:
        if not self._eligible():
            await self._refuse_not_eligible()
            return
        await self._page()

    @web.authenticated
    async def post(self) -> None:
        state = self._state()
        user = self.current_user
        if not self._eligible():
            await self._refuse_not_eligible()
            return
        if self.get_body_argument("action", "") == "end":
            await end_window(self.db, user.orm_user, "ended by the user")
            self.redirect(self.hub.base_url + "break-glass")
            return
        form = {
            "reason": self.get_body_argument("reason", ""),
            "target": self.get_body_argument("target", ""),
            "minutes": self.get_body_argument("minutes", ""),
        }
        now = state.clock()
        if state.store.open_for(user.name, now) is not None:
            await self._page(409, "Break glass is already active: end it first.", form)
            return
        try:
            window = open_window(
                user.name, form["reason"], form["target"], form["minutes"], state.max_minutes, now
            )
        except BreakGlassError as err:
            await self._page(400, str(err), form)
            return
        try:
            await state.reporter.report(
                {
                    "event": "activated",
                    "session": window.session,
                    "user": window.user,
                    "reason": window.reason,
                    "target": window.target,
                    "until": iso(window.until),
                }
            )
        except RuntimeError as err:
            security_event(
                log,
                "break_glass.unrecorded",
                "break glass: activation by %s not recorded: %s",
                user.name,
                err,
                user=user.name,
                session_id=window.session,
            )
            await self._page(503, AUDIT_DOWN.format(what="activated"), form)
            return
        state.store.put(window)
        orm_user = user.orm_user
        if not _in_group(orm_user, SERVER_ACCESS_HUB_GROUP):
            orm_user.groups.append(_group(self.db, SERVER_ACCESS_HUB_GROUP))
        self.db.commit()
        security_event(
            log,
            "break_glass.activated",
            "break glass: %s activated for %s until %s (%s)",
            user.name,
            window.target,
            iso(window.until),
            window.session,
            user=user.name,
            session_id=window.session,
            target=window.target,
            until=iso(window.until),
            reason=window.reason,
        )
        self.redirect(self.hub.base_url + "break-glass")


async def sweep(app_db: Callable[[], Any]) -> None:
    """End expired windows (and their access); retry unwritten reports."""
    state = STATE
    if state is None:
        return
    db = app_db()
    now = state.clock()
    for window in state.store.expired(now):
        orm_user = orm.User.find(db, window.user)
        state.store.pop(window.user)
        if orm_user is not None:
            revoke_access(db, orm_user)
        security_event(
            log,
            "break_glass.ended",
            "break glass: %s's window expired",
            window.user,
            user=window.user,
            session_id=window.session,
            why="expired",
        )
        await state.reporter.report_later(_end_event(window, "expired"))
    group = orm.Group.find(db, SERVER_ACCESS_HUB_GROUP)
    for orm_user in list(group.users) if group is not None else []:
        if state.store.open_for(orm_user.name, now) is None:
            revoke_access(db, orm_user)
            log.info("break glass: %s was in server-access without a window", orm_user.name)
    await state.reporter.flush()


def _patch_jupyterhub() -> None:
    """Hook :func:`enforce` and :func:`gate_oauth` into JupyterHub's handlers (once)."""
    from jupyterhub.apihandlers.auth import OAuthAuthorizeHandler

    if getattr(BaseHandler, "_havre_break_glass", False):
        return
    resolve = BaseHandler._resolve_roles_and_scopes

    def resolve_with_break_glass(self: Any) -> None:
        if self.current_user is not None:
            try:
                enforce(self)
            except Exception:  # never leave access in place because the check failed
                log.exception("break glass: the check at use time failed")
                raise web.HTTPError(503, "Access can't be checked right now.") from None
        resolve(self)

    BaseHandler._resolve_roles_and_scopes = resolve_with_break_glass
    get, post = OAuthAuthorizeHandler.get, OAuthAuthorizeHandler.post

    @web.authenticated
    async def gated_get(self: Any) -> None:
        await gate_oauth(self)
        await get.__wrapped__(self)

    @web.authenticated
    async def gated_post(self: Any) -> None:
        await gate_oauth(self)
        result = post.__wrapped__(self)
        if result is not None:
            await result

    OAuthAuthorizeHandler.get, OAuthAuthorizeHandler.post = gated_get, gated_post
    BaseHandler._havre_break_glass = True


def configure(c: Any, *, state_file: Path, egress_url: str, api_token: str, minutes: int) -> None:
    """Set up break glass in the hub's config ``c`` (the page, the hooks, the sweep)."""
    global STATE
    STATE = BreakGlass(
        WindowStore(state_file),
        AuditReporter(
            f"{egress_url.rstrip('/')}/services/egress/api/break-glass/events", api_token
        ),
        minutes,
    )
    _patch_jupyterhub()
    c.JupyterHub.extra_handlers = [(r"/break-glass", BreakGlassHandler)]

    def start_sweep() -> None:
        from jupyterhub.app import JupyterHub

        def db() -> Any:
            return JupyterHub.instance().db

        PeriodicCallback(lambda: sweep(db), SWEEP_SECONDS * 1000).start()

    try:
        loop = asyncio.get_running_loop()  # the hub loads its config inside its event loop
    except RuntimeError:
        return  # a unit test filling a config object: no sweep
    loop.call_soon(start_sweep)
