"""What the operations share: limits, input validation, the shapes they return and the SDC
check helpers."""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from egress.audit.chain import (
    EventType,
    format_time,
)
from egress.domain.errors import (
    InvalidInput,
    NotFound,
)
from egress.domain.policy import Actor
from egress.domain.workflow import (
    Action,
)
from havre.enclave.config import ADMINS_HUB_GROUP, EnclaveConfig

log = logging.getLogger("egress.core")

MAX_TITLE = 200
MAX_GROUP_NAME = 100
MAX_COMMENT = 10_000
MAX_CONTEXT = 20_000
DEFAULT_GROUP = "default"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_STATE_EVENTS = {
    Action.SUBMIT: EventType.SUBMITTED,
    Action.WITHDRAW: EventType.WITHDRAWN,
    Action.RETURN: EventType.RETURNED,
    Action.APPROVE: EventType.APPROVED,
    Action.REJECT: EventType.REJECTED,
    Action.RELEASE: EventType.RELEASED,
    Action.REVOKE: EventType.REVOKED,
}


# --------------------------------------------------------------------------------------------
# Errors and small value types


#: The largest row id accepted in input (beyond any real one; fits every database's integers).
MAX_ID = 999_999_999_999
#: A recipient meaning "every output checker at delivery time, except the user named after it".
CHECKERS_MARKER = "@output-checkers-except:"


#: How long the first answer to a write with an ``Idempotency-Key`` is kept for its retries.
IDEMPOTENCY_TTL = timedelta(hours=24)
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,128}")


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer to a write sent with an ``Idempotency-Key``: given again to retries."""

    status: int
    content_type: str
    location: str
    body: str


@dataclass(frozen=True)
class FileContent:
    """Bytes of a file of a request, with what a viewer or a download needs to know."""

    file_id: int
    path: str
    data: bytes = field(repr=False)
    sha256: str
    size: int
    kind: str
    media_type: str
    snapshot_sha256: str


@dataclass(frozen=True)
class OutboxMessage:
    """A notification to send: ``to`` are usernames (the sender resolves their addresses)."""

    id: int
    event: str
    to: tuple[str, ...]
    subject: str
    body: str
    created_at: datetime
    attempts: int


@dataclass(frozen=True)
class ServicePaths:
    """Where the egress service keeps its state under the enclave's state directory."""

    state_dir: Path

    @property
    def egress_dir(self) -> Path:
        return Path(self.state_dir) / "egress"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.egress_dir / 'egress.db'}"

    @property
    def content_dir(self) -> Path:
        return self.egress_dir / "content"

    @property
    def signing_key(self) -> Path:
        return self.egress_dir / "signing-key.pem"

    @property
    def checkpoints(self) -> Path:
        return self.egress_dir / "audit-checkpoints.jsonl"


def actor_for(enclave: EnclaveConfig, name: str, hub_groups: Iterable[str] = ()) -> Actor:
    """The policy's :class:`Actor` for hub user ``name`` with ``hub_groups``.

    Projects and the checker role come from the enclave config (listed members and checkers, or
    the hub groups Havre manages); administrators are the members of the ``hub-admins`` group.
    """
    groups = list(hub_groups)
    return Actor(
        username=name,
        projects=frozenset(p.slug for p in enclave.projects_of(name, groups)),
        is_checker=enclave.is_checker(name, groups),
        is_admin=ADMINS_HUB_GROUP in groups,
    )


_ID_ALPHABET = string.ascii_letters + string.digits


def new_request_id() -> str:
    """A random request id: 12 letters and digits (71 bits; never starts with ``-``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _now_utc() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else format_time(when)


#: the columns of a request that its summary shows (see ``EgressService._summary``)
_SUMMARY_COLUMNS = (
    "id",
    "project",
    "author",
    "title",
    "state",
    "round",
    "reviews_required",
    "created_at",
    "updated_at",
    "submitted_at",
)


def page_cursor(summary: Mapping[str, Any]) -> str:
    """The opaque position after ``summary`` in the requests list (its ``after`` argument)."""
    raw = json.dumps([summary["updated_at"], summary["id"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated, request_id = json.loads(raw)
        when = datetime.fromisoformat(updated)
        if when.tzinfo is None or not isinstance(request_id, str):
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidInput(
            "after is not a position in the requests list; use the `next` link of a page."
        ) from None
    return when, request_id


def _clean_text(value: object, what: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text.")
    text = value.strip()
    if not text and not allow_empty:
        raise InvalidInput(f"{what} can't be empty.")
    if len(text) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters.")
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character.")
    return text


def _group_name(value: object) -> str:
    name = _clean_text(value, "The group name", MAX_GROUP_NAME)
    if not name.isprintable():
        raise InvalidInput("The group name contains invisible or control characters.")
    return name


def _request_id(value: object) -> str:
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value):
        raise NotFound(f"There is no release request {value!r}.")
    return value


def _file_id(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise NotFound(f"There is no file {value!r} in this request.") from None
    if isinstance(value, bool) or not 1 <= number <= MAX_ID:
        raise NotFound(f"There is no file {str(value)[:40]!r} in this request.")
    return number


def _versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
