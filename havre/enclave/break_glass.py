"""Break glass, the pure part: who may open another user's server, for how long, and why.

Being in one of the enclave's ``identity.server_access_groups`` at the identity provider makes
a user *eligible* (hub group ``break-glass``), which grants nothing by itself. The user must
activate break glass on the hub's page ``/hub/break-glass``, giving a written reason, the server
they need (``alice``, ``alice/cardio`` or ``any``) and a duration of at most
``identity.break_glass_minutes``. Only then does the hub put them in the ``server-access`` group
(whose role has ``access:servers``), until the window ends: at its time, at logout, when they
end it, or when the provider no longer lists them in the group.

This module holds the rules (validation, the window, which servers a target covers) and the
record of open windows the hub keeps in its state folder; :mod:`spawner.break_glass_hub` does
the hub's side (the page, the checks at each request, the audit calls to the egress service).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: a reason must say something, and fit in an e-mail and an audit event
REASON_MIN, REASON_MAX = 10, 500
#: what the target field may be: a hub user name, optionally with a server name, or "any"
TARGET_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,62}(/[a-z0-9][a-z0-9-]{0,39})?")
ANY = "any"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def hub_key(api_token: str) -> str:
    """The key the hub sends with its break-glass reports to the egress service: derived from
    the egress service's hub API token, which both know (the token itself never travels)."""
    return hmac.new(api_token.encode(), b"havre break-glass audit v1", hashlib.sha256).hexdigest()


class BreakGlassError(ValueError):
    """An activation that can't be accepted; the message is a sentence for the user."""


@dataclass(frozen=True)
class Window:
    """One activation of break glass: who, why, which servers, from when until when."""

    session: str
    user: str
    reason: str
    target: str
    started: datetime
    until: datetime

    def is_open(self, now: datetime) -> bool:
        """Whether the window still gives access at ``now`` (the end is exclusive)."""
        return self.started <= now < self.until

    def covers(self, owner: str, server: str) -> bool:
        """Whether the window's target includes ``owner``'s server ``server``."""
        return target_covers(self.target, owner, server)

    def to_json(self) -> dict[str, str]:
        doc = asdict(self)
        doc["started"] = iso(self.started)
        doc["until"] = iso(self.until)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, str]) -> Window:
        return cls(
            session=str(doc["session"]),
            user=str(doc["user"]),
            reason=str(doc["reason"]),
            target=str(doc["target"]),
            started=parse_iso(doc["started"]),
            until=parse_iso(doc["until"]),
        )


def iso(when: datetime) -> str:
    """A UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def clean_reason(value: object) -> str:
    """The reason as given, trimmed; refused with a sentence when empty, short, long or odd."""
    if not isinstance(value, str) or not value.strip():
        raise BreakGlassError(
            "Give a reason: break glass opens another person's work, and the reason goes to "
            "the output checkers and into the audit log."
        )
    reason = " ".join(value.split())
    if len(reason) < REASON_MIN:
        raise BreakGlassError(
            f"The reason is too short: say in at least {REASON_MIN} characters why you need "
            "access (a ticket number and what is broken, for example)."
        )
    if len(reason) > REASON_MAX:
        raise BreakGlassError(f"The reason is too long: {REASON_MAX} characters at most.")
    if _CONTROL.search(reason):
        raise BreakGlassError("The reason must not contain control or formatting characters.")
    return reason


def clean_target(value: object) -> str:
    """``any``, a user name, or ``user/project``; refused with a sentence otherwise."""
    target = value.strip().lower() if isinstance(value, str) else ""
    if target == ANY or TARGET_RE.fullmatch(target):
        return target
    raise BreakGlassError(
        "Name the server you need: a user name (all their servers), user/project (one "
        "server), or 'any'."
    )


def clean_minutes(value: object, max_minutes: int) -> int:
    """The window's length in whole minutes, 1 to ``max_minutes``; empty means the maximum."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return max_minutes
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= max_minutes:
        raise BreakGlassError(
            f"The duration must be a whole number of minutes from 1 to {max_minutes}."
        )
    return int(text)


def target_covers(target: str, owner: str, server: str) -> bool:
    """Whether ``target`` (``any``, ``user`` or ``user/project``) includes a server."""
    if target == ANY:
        return True
    if "/" in target:
        return target == f"{owner}/{server}"
    return target == owner


def open_window(
    user: str, reason: object, target: object, minutes: object, max_minutes: int, now: datetime
) -> Window:
    """A new window for ``user`` from ``now``, after validating what the form sent."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    length = clean_minutes(minutes, max_minutes)
    return Window(
        session=secrets.token_hex(16),
        user=user,
        reason=clean_reason(reason),
        target=clean_target(target),
        started=now.replace(microsecond=0),
        until=now.replace(microsecond=0) + timedelta(minutes=length),
    )


class WindowStore:
    """The open windows, one per user at most, kept in a JSON file (mode 0600).

    The file lets a hub restart keep an emergency going; a window past its end counts as
    closed whatever the file says (:meth:`open_for`), so a stale file can't give access.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.windows: dict[str, Window] = {}
        if path is not None and path.exists():
            try:
                doc = json.loads(path.read_text())
                for item in doc.get("windows", []):
                    window = Window.from_json(item)
                    self.windows[window.user] = window
            except (OSError, ValueError, KeyError, TypeError):
                self.windows = {}  # unreadable: no window is open (fail closed)

    def open_for(self, user: str, now: datetime) -> Window | None:
        """The user's window if it is open at ``now``."""
        window = self.windows.get(user)
        return window if window is not None and window.is_open(now) else None

    def put(self, window: Window) -> None:
        self.windows[window.user] = window
        self._save()

    def pop(self, user: str) -> Window | None:
        window = self.windows.pop(user, None)
        if window is not None:
            self._save()
        return window

    def expired(self, now: datetime) -> list[Window]:
        """Windows whose time is over (still recorded: the caller ends them)."""
        return [w for w in self.windows.values() if not w.is_open(now)]

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"windows": [w.to_json() for w in self.windows.values()]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".break-glass.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(doc, handle)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
