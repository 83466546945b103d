"""Break glass in the audit log: the hub reports, the egress service records and tells checkers.

The hub decides who may open another user's server (``havre.enclave.break_glass``) but must not
write the audit log itself. It posts each step here, to ``api/break-glass/events``,
authenticated with a key both sides derive from the egress service's hub API token
(:func:`hub_key`: HMAC-SHA256 of the token; the token itself never travels, and notebook
containers, which can reach this service, know neither):

* ``activated``: who, why, which servers, until when. Written with a notification to every
  output checker in the same transaction; the hub grants access only after this answered 201,
  so a failing audit write fails the activation (closed).
* ``used``: the user opened another user's server (``owner/server``), once per authorization.
* ``ended``: the window closed (expired, logout, ended by the user, left the provider's group).

Checkers (and administrators) read the sessions back with :func:`sessions`: the checkers' page
``break-glass`` and ``api/break-glass``.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from egress.audit.chain import EventType
from egress.domain.errors import InvalidInput
from egress.domain.policy import Actor, PermissionDenied
from egress.operations.base import ServiceBase
from egress.operations.common import CHECKERS_MARKER
from egress.store.db import read_session
from egress.store.models import AuditEventRow
from havre.enclave.break_glass import hub_key

#: what the hub posts, and the audit event each becomes
EVENTS = {
    "activated": EventType.BREAK_GLASS_ACTIVATED,
    "used": EventType.BREAK_GLASS_USED,
    "ended": EventType.BREAK_GLASS_ENDED,
}
_SESSION = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,62}")
_TARGET = re.compile(r"any|[a-z0-9][a-z0-9._@-]{0,62}(/[a-z0-9][a-z0-9-]{0,39})?")
_SERVER = re.compile(r"[a-z0-9][a-z0-9._@-]{0,62}/[a-z0-9][a-z0-9-]{0,39}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_ENDINGS = ("expired", "logout", "ended by the user", "left the group", "hub restart")
#: the actor of refusals logged by the core (the hub is not a user)
HUB_ACTOR = Actor(username="hub", projects=frozenset(), is_checker=False)


def key_matches(header: str | None, api_token: str) -> bool:
    """Whether an ``Authorization: Bearer <key>`` header carries the hub's key."""
    if not api_token or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip(), hub_key(api_token))


def _field(body: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInput(f"'{name}' must be {what}.")
    return value


def parse_event(body: object) -> dict[str, Any]:
    """The hub's report, validated; :class:`EgressError` (422) with a sentence otherwise."""
    if not isinstance(body, Mapping):
        raise InvalidInput("The body must be a JSON object.")
    kind = body.get("event")
    if kind not in EVENTS:
        raise InvalidInput(f"'event' must be one of {', '.join(EVENTS)}.")
    event = {
        "event": kind,
        "session": _field(body, "session", _SESSION, "32 hexadecimal digits"),
        "user": _field(body, "user", _NAME, "a hub user name"),
    }
    if kind == "activated":
        reason = body.get("reason")
        if not isinstance(reason, str) or not 10 <= len(reason) <= 500:
            raise InvalidInput("'reason' must be a text of 10 to 500 characters.")
        event["reason"] = reason
        event["target"] = _field(body, "target", _TARGET, "any, a user, or user/project")
        event["until"] = _field(body, "until", _TIME, "a UTC time YYYY-MM-DDTHH:MM:SSZ")
    elif kind == "used":
        event["server"] = _field(body, "server", _SERVER, "owner/project")
    else:
        why = body.get("why")
        if why not in _ENDINGS:
            raise InvalidInput(f"'why' must be one of: {', '.join(_ENDINGS)}.")
        event["why"] = why
    return event


def record(service: ServiceBase, body: object) -> dict[str, Any]:
    """Write the hub's report as an audit event (and, for an activation, notify checkers)."""
    event = parse_event(body)
    details = {k: v for k, v in event.items() if k not in ("event", "user")}
    with service.writing("break_glass", HUB_ACTOR) as tx:
        written = tx.audit(
            event["user"],
            EVENTS[event["event"]],
            object=event.get("server") or event.get("target"),
            details=details,
        )
        if event["event"] == "activated":
            listed = sorted(service.enclave.output_checkers - {event["user"]})
            link = f"\n\n{service.service_url}/break-glass\n" if service.service_url else ""
            tx.notify(
                "break_glass",
                [*listed, f"{CHECKERS_MARKER}{event['user']}"],
                f"[Havre] Break glass: {event['user']} may open {event['target']} servers",
                f"{event['user']} activated break glass until {event['until']} (UTC) for "
                f"{event['target']} notebook servers.\nReason given: {event['reason']}\n"
                f"Every server they open is in the audit log.{link}\n-- Havre egress service\n",
            )
    return {"seq": written.seq, "event": written.event}


def sessions(service: ServiceBase, actor: Actor, limit: int = 50) -> list[dict[str, Any]]:
    """The latest break-glass sessions, newest first, for checkers and administrators."""
    if not (actor.is_checker or actor.is_admin):
        raise PermissionDenied(
            "Only output checkers and administrators see break-glass sessions.", 403
        )
    names = [e.value for e in EVENTS.values()]
    with read_session(service.engine) as session:
        rows = session.execute(
            select(AuditEventRow.line)
            .where(AuditEventRow.event.in_(names))
            .order_by(AuditEventRow.seq.desc())
            .limit(limit * 10)
        ).scalars()
        lines = [json.loads(line) for line in rows]
    return summarise(lines, datetime.now(UTC), limit)


def summarise(events: list[dict[str, Any]], now: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Sessions from break-glass audit events (any order): one entry per activation."""
    found: dict[str, dict[str, Any]] = {}
    for ev in sorted(events, key=lambda e: e["seq"]):
        details = ev.get("details") or {}
        key = details.get("session")
        if ev["event"] == EventType.BREAK_GLASS_ACTIVATED.value:
            found[key] = {
                "session": key,
                "user": ev["actor"],
                "reason": details.get("reason", ""),
                "target": details.get("target", ""),
                "activated": ev["time"],
                "until": details.get("until", ""),
                "servers_opened": [],
                "ended": None,
                "ended_why": None,
            }
        elif key in found and ev["event"] == EventType.BREAK_GLASS_USED.value:
            found[key]["servers_opened"].append({"server": details["server"], "time": ev["time"]})
        elif key in found and ev["event"] == EventType.BREAK_GLASS_ENDED.value:
            found[key]["ended"] = ev["time"]
            found[key]["ended_why"] = details.get("why")
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = []
    for entry in found.values():
        entry["active"] = entry["ended"] is None and stamp < entry["until"]
        result.append(entry)
    result.sort(key=lambda e: e["activated"], reverse=True)
    return result[:limit]
