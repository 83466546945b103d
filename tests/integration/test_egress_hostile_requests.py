"""Hostile HTTP requests against the live egress service, through the hub's proxy.

Each row of ``HOSTILE`` is one request a malicious or confused client could send: forged
credentials, another user's cookie, a missing XSRF token, a member of another project, path
traversal in a file path, ids that don't exist or belong elsewhere, malformed or oversized
bodies, methods the API doesn't have, and roles acting beyond their rights. For each row the
test checks the status, that the refusal carries a sentence a person can act on (the JSON
``message`` of the API, or the alert of an HTML page), and that nothing changed: the requests an
output checker sees (ids, states, file counts, last update) and the number of events in the
audit log (``GET api/audit/verify``) are the same before and after.

Rows marked ``bug`` are real defects of the service, reported to the lead and expected to fail
(``xfail(strict=True)``): when one is fixed its row XPASSes and fails, the signal to unmark it.

The last test sends POSTs whose ``_xsrf`` cookie doesn't match the session (missing, or another
user's token cookie). While that deadlocks the service (a known bug), the test restarts the
egress container and waits for it, so the rest of the suite finds a working service (sessions
made before the restart must sign in to the service again: its cookie secret is made at start).
"""

from __future__ import annotations

import html
import http
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.integration.test_egress_flow import Egress

pytestmark = pytest.mark.docker

TABLE_NAME = "hostile_counts.csv"
TABLE = "region,stays\nBretagne,44\nOccitanie,61\nNormandie,29\n"
FIVE_MB = 5 * 1024 * 1024
UNKNOWN_ID = "NoSuchReq123"

# The bugs these rows found when they were written (refusals without a sentence, a redirect
# instead of a 403 for API clients, empty error pages, no body limit, 500s on odd input, and a
# deadlock of the whole service on a mismatched XSRF token) are fixed; a row that regresses
# fails. Add `bug="..."` to a row to record a newly found, not yet fixed one as a strict xfail.


@dataclass(frozen=True)
class Hostile:
    """One hostile request and what the service must answer."""

    id: str
    actor: str
    method: str
    path: str  # formatted with the ids of the fixture objects: {draft}, {sub}, {sub_file}...
    expect: frozenset[int]
    #: "session" (cookie + X-XSRFToken), "no-xsrf", "forged-token", "forged-cookie"
    auth: str = "session"
    json: Any = None
    body: Callable[[], bytes | str] | None = None
    form: dict[str, str] | None = None
    page: bool = False  # an HTML page route: the message is the page's alert
    mentions: tuple[str, ...] = ()  # words the message must contain
    bug: str | None = None
    #: positive control, run first: (actor, path) of a GET that must succeed with a real
    #: session (the same resource, asked by someone allowed)
    control: tuple[str, str] | None = None

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=self.id, marks=marks)


def _s(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def _traversal(row_id: str, path: str, *mentions: str) -> Hostile:
    return Hostile(
        row_id,
        "alice",
        "POST",
        "api/requests/{draft}/files",
        _s(400, 422),
        json={"path": path},
        mentions=mentions,
    )


HOSTILE = [
    # -- credentials and CSRF -------------------------------------------------------------
    Hostile(
        "forged-token-get",
        "anonymous",
        "GET",
        "api/requests/{sub}",
        _s(401, 403),
        auth="forged-token",
        mentions=("signed in",),
        control=("alice", "api/requests/{sub}"),
    ),
    Hostile(
        "forged-token-post",
        "anonymous",
        "POST",
        "api/requests/{sub}/approve",
        _s(401, 403),
        auth="forged-token",
        mentions=("signed in",),
        control=("alice", "api/requests/{sub}"),
    ),
    Hostile(
        "forged-service-cookie",
        "anonymous",
        "POST",
        "api/requests",
        _s(401, 403),
        auth="forged-cookie",
        json={"project": "cardio", "title": "forged"},
        mentions=("signed in",),
        control=("alice", "api/requests"),
    ),
    Hostile(
        "bob-cookie-on-alices-request",
        "bob",
        "POST",
        "api/requests/{draft}/withdraw",
        _s(403),
        mentions=("cardio",),
    ),
    Hostile(
        "post-without-xsrf-header",
        "alice",
        "POST",
        "api/requests/{draft}/withdraw",
        _s(403),
        auth="no-xsrf",
        mentions=("_xsrf",),
    ),
    Hostile(
        "form-post-without-xsrf",
        "alice",
        "POST",
        "requests/{draft}/do",
        _s(403),
        auth="no-xsrf",
        form={"action": "withdraw"},
        page=True,
        mentions=("_xsrf",),
    ),
    Hostile(
        "form-post-by-other-project",
        "bob",
        "POST",
        "requests/{draft}/do",
        _s(403),
        form={"action": "withdraw"},
        page=True,
        mentions=("cardio",),
    ),
    # -- a member of another project (bob, diabetes) on cardio's requests ------------------
    Hostile(
        "other-project-reads", "bob", "GET", "api/requests/{sub}", _s(403), mentions=("cardio",)
    ),
    Hostile(
        "other-project-adds-file",
        "bob",
        "POST",
        "api/requests/{draft}/files",
        _s(403),
        json={"path": TABLE_NAME},
        mentions=("cardio",),
    ),
    Hostile(
        "other-project-votes",
        "bob",
        "PUT",
        "api/requests/{sub}/files/{sub_file}/vote",
        _s(403),
        json={"vote": "approve"},
        mentions=("cardio",),
    ),
    Hostile(
        "other-project-comments",
        "bob",
        "POST",
        "api/requests/{sub}/comments",
        _s(403),
        json={"body": "let me in"},
        mentions=("cardio",),
    ),
    Hostile(
        "other-project-lists-outputs",
        "bob",
        "GET",
        "api/projects/cardio/outputs",
        _s(403),
        mentions=("cardio",),
    ),
    Hostile(
        "other-project-raw-file",
        "bob",
        "GET",
        "requests/{sub}/files/{sub_file}/raw",
        _s(403),
        page=True,
        mentions=("cardio",),
    ),
    # -- bytes of an unreleased file (issue #12): refused to members and to checkers before
    #    submission; the control is a checker's view of the submitted request's raw file
    Hostile(
        "author-raw-submitted",
        "alice",
        "GET",
        "requests/{sub}/files/{sub_file}/raw",
        _s(403),
        page=True,
        mentions=("never gives authors",),
        control=("olivia", "requests/{sub}/files/{sub_file}/raw"),
    ),
    Hostile(
        "author-raw-draft",
        "alice",
        "GET",
        "requests/{draft}/files/{draft_file}/raw",
        _s(403),
        page=True,
        mentions=("never gives authors",),
        control=("olivia", "requests/{sub}/files/{sub_file}/raw"),
    ),
    Hostile(
        "co-member-raw-submitted",
        "carol",
        "GET",
        "requests/{sub}/files/{sub_file}/raw",
        _s(403),
        page=True,
        mentions=("Only output checkers see the contents",),
        control=("olivia", "requests/{sub}/files/{sub_file}/raw"),
    ),
    Hostile(
        "checker-raw-draft",
        "olivia",
        "GET",
        "requests/{draft}/files/{draft_file}/raw",
        _s(403),
        page=True,
        mentions=("has not been submitted",),
        control=("olivia", "requests/{sub}/files/{sub_file}/raw"),
    ),
    Hostile(
        "checker-reads-draft",
        "olivia",
        "GET",
        "api/requests/{draft}",
        _s(403),
        mentions=("has not been submitted",),
        control=("olivia", "api/requests/{sub}"),
    ),
    # -- paths into the outputs folder ------------------------------------------------------
    _traversal("traversal-dotdot", "../../etc/passwd", "'..'"),
    _traversal("traversal-absolute", "/etc/passwd", "absolute"),
    _traversal("traversal-inner-dotdot", "a/../../x", "'..'"),
    _traversal("traversal-nul", "a\x00b.csv", "NUL"),
    _traversal("traversal-long-path", "d/" * 2100 + "x.csv", "longer than"),
    _traversal("traversal-long-name", "n" * 300 + ".csv", "255"),
    _traversal("traversal-missing", "no_such_file.csv", "does not exist"),
    # -- ids that don't exist or belong to another request -----------------------------------
    Hostile(
        "unknown-request",
        "alice",
        "GET",
        f"api/requests/{UNKNOWN_ID}",
        _s(404),
        mentions=("no release request",),
    ),
    Hostile(
        "unknown-request-action",
        "olivia",
        "POST",
        f"api/requests/{UNKNOWN_ID}/approve",
        _s(404),
        mentions=("no release request",),
    ),
    Hostile(
        "file-of-another-request-delete",
        "alice",
        "DELETE",
        "api/requests/{draft}/files/{sub_file}",
        _s(404),
        mentions=("no file",),
    ),
    Hostile(
        "file-of-another-request-vote",
        "olivia",
        "PUT",
        "api/requests/{sub}/files/{draft_file}/vote",
        _s(404),
        json={"vote": "approve"},
        mentions=("no file",),
    ),
    Hostile(
        "unknown-file-vote",
        "olivia",
        "PUT",
        "api/requests/{sub}/files/999999999/vote",
        _s(404),
        json={"vote": "approve"},
        mentions=("no file",),
    ),
    Hostile(
        "huge-file-id-in-comment",
        "alice",
        "POST",
        "api/requests/{draft}/comments",
        _s(400, 404),
        json={"body": "about that file", "file_id": 10**30},
        mentions=("file",),
    ),
    # -- bodies and parameters -------------------------------------------------------------
    Hostile(
        "vote-not-in-enum",
        "olivia",
        "PUT",
        "api/requests/{sub}/files/{sub_file}/vote",
        _s(400),
        json={"vote": "yes"},
        mentions=("approve",),
    ),
    Hostile(
        "vote-not-a-string",
        "olivia",
        "PUT",
        "api/requests/{sub}/files/{sub_file}/vote",
        _s(400),
        json={"vote": ["approve"]},
        mentions=("vote",),
    ),
    Hostile(
        "oversized-title",
        "alice",
        "POST",
        "api/requests",
        _s(400, 413),
        body=lambda: '{"project": "cardio", "title": "' + "x" * FIVE_MB + '"}',
        mentions=("larger than",),
    ),
    Hostile(
        "oversized-body",
        "alice",
        "POST",
        "api/requests",
        _s(400, 413),
        body=lambda: '{"project": "cardio", "title": "t", "pad": "' + "x" * FIVE_MB + '"}',
        mentions=("larger than",),
    ),
    Hostile(
        "non-json-body",
        "alice",
        "POST",
        "api/requests",
        _s(400),
        body=lambda: "project=cardio&title=t",
        mentions=("JSON",),
    ),
    Hostile(
        "json-array-body",
        "alice",
        "POST",
        "api/requests",
        _s(400),
        json=[{"project": "cardio"}],
        mentions=("JSON",),
    ),
    Hostile(
        "json-string-body",
        "alice",
        "POST",
        "api/requests",
        _s(400),
        json="cardio",
        mentions=("JSON",),
    ),
    Hostile(
        "invalid-utf8-body",
        "alice",
        "POST",
        "api/requests",
        _s(400),
        body=lambda: b"\xff\xfe{",
        mentions=("JSON",),
    ),
    Hostile(
        "deeply-nested-json",
        "alice",
        "POST",
        "api/requests",
        _s(400),
        body=lambda: "[" * 100_000,
        mentions=("JSON",),
    ),
    Hostile(
        "group-name-nul",
        "alice",
        "PUT",
        "api/requests/{draft}/groups/%00",
        _s(400),
        json={"context": "x"},
        mentions=("NUL",),
    ),
    Hostile(
        "bad-older-than-days",
        "olivia",
        "GET",
        "api/requests?older_than_days=abc",
        _s(400),
        mentions=("days",),
    ),
    Hostile(
        "bad-state-filter",
        "olivia",
        "GET",
        "api/requests?state=hacked",
        _s(400),
        mentions=("state",),
    ),
    Hostile(
        "bad-page-limit", "olivia", "GET", "api/requests?limit=-5", _s(400), mentions=("limit",)
    ),
    Hostile(
        "forged-page-position",
        "olivia",
        "GET",
        "api/requests?after=Jy0tJw",
        _s(400),
        mentions=("position",),
    ),
    Hostile(
        "bulk-approval",
        "olivia",
        "POST",
        "api/requests/{sub}/votes",
        _s(400),
        json={"vote": "approve"},
        mentions=("safe direction",),
    ),
    Hostile(
        "author-bulk-votes-own",
        "alice",
        "POST",
        "api/requests/{sub}/votes",
        _s(403),
        json={"vote": "request_changes"},
        mentions=("author",),
    ),
    Hostile(
        "bulk-votes-not-a-list",
        "olivia",
        "POST",
        "api/requests/{sub}/votes",
        _s(400),
        json={"vote": "request_changes", "file_ids": "1,2"},
        mentions=("file_ids",),
    ),
    # -- methods and routes -----------------------------------------------------------------
    Hostile("method-not-allowed", "alice", "DELETE", "api/requests", _s(405), mentions=("method",)),
    Hostile(
        "method-not-allowed-on-request",
        "alice",
        "PATCH",
        "api/requests/{draft}",
        _s(405),
        mentions=("method",),
    ),
    Hostile(
        "unknown-action",
        "alice",
        "POST",
        "api/requests/{draft}/frobnicate",
        _s(404),
        mentions=("no such",),
    ),
    Hostile(
        "unknown-api-route", "alice", "GET", "api/admin/users", _s(404), mentions=("API endpoint",)
    ),
    # -- roles beyond their rights ----------------------------------------------------------
    Hostile(
        "author-approves-own",
        "alice",
        "POST",
        "api/requests/{sub}/approve",
        _s(403),
        mentions=("author",),
    ),
    Hostile(
        "author-releases-own",
        "alice",
        "POST",
        "api/requests/{sub}/release",
        _s(403),
        mentions=("author",),
    ),
    Hostile(
        "author-votes-own",
        "alice",
        "PUT",
        "api/requests/{sub}/files/{sub_file}/vote",
        _s(403),
        json={"vote": "approve"},
        mentions=("author",),
    ),
    Hostile(
        "co-member-approves",
        "carol",
        "POST",
        "api/requests/{sub}/approve",
        _s(403),
        mentions=("output checkers",),
    ),
    Hostile(
        "co-member-withdraws",
        "carol",
        "POST",
        "api/requests/{draft}/withdraw",
        _s(403),
        mentions=("author",),
    ),
    Hostile(
        "checker-creates-in-cardio",
        "olivia",
        "POST",
        "api/requests",
        _s(403),
        json={"project": "cardio", "title": "from a checker"},
        mentions=("cardio",),
    ),
    Hostile(
        "checker-adds-file",
        "olivia",
        "POST",
        "api/requests/{draft}/files",
        _s(403),
        json={"path": TABLE_NAME},
        mentions=("has not been submitted",),
    ),
    Hostile(
        "researcher-verifies-audit",
        "alice",
        "GET",
        "api/audit/verify",
        _s(403),
        mentions=("output checkers",),
    ),
]


# ---------------------------------------------------------------------------- fixtures


@dataclass
class World:
    users: dict[str, Egress]
    ids: dict[str, str]

    def snapshot(self) -> tuple[Any, ...]:
        """What a checker and the cardio author see of every request (checkers don't see
        drafts), and the audit log's length."""
        checker = self.users["olivia"]
        listed = checker.ok("GET", "api/requests?limit=500")
        listed += self.users["alice"].ok("GET", "api/requests?limit=500")
        requests_seen = sorted(
            (r["id"], r["state"], r["files"], r["round"], r["updated_at"]) for r in listed
        )
        verified = checker.ok("GET", "api/audit/verify")
        assert verified["ok"], verified
        return len(set(requests_seen)), sorted(set(requests_seen)), verified["events_checked"]


@pytest.fixture(scope="module")
def world(enclave) -> World:
    users = {name: Egress(enclave.user(name)) for name in ("alice", "bob", "carol", "olivia")}
    path = enclave.config.outputs_dir("cardio") / TABLE_NAME
    path.write_text(TABLE)
    os.chown(path, 1000, 1000)
    os.chmod(path, 0o640)
    alice = users["alice"]
    made = {}
    for key in ("draft", "sub"):
        rid = alice.ok("POST", "api/requests", 201, json={"project": "cardio", "title": key})["id"]
        detail = alice.ok("POST", f"api/requests/{rid}/files", 201, json={"path": TABLE_NAME})
        alice.ok(
            "PUT",
            f"api/requests/{rid}/groups/main",
            json={"context": "Stays by region", "controls": "All cells >= 10"},
        )
        made[key], made[f"{key}_file"] = rid, str(detail["file"]["id"])
    assert alice.ok("POST", f"api/requests/{made['sub']}/submit")["state"] == "submitted"
    return World(users, made)


# ---------------------------------------------------------------------------- the test


def _is_sentence(message: object, status: int) -> bool:
    """A message a person can act on: words, not just the status's reason phrase."""
    if not isinstance(message, str):
        return False
    text = message.strip()
    try:
        bare = http.HTTPStatus(status).phrase.lower()
    except ValueError:
        bare = ""
    return len(re.findall(r"[A-Za-z]{2,}", text)) >= 3 and text.lower() != bare


def _send(world: World, row: Hostile) -> requests.Response:
    url = world.users["alice"].base + row.path.format(**world.ids)
    kwargs: dict[str, Any] = {"timeout": 120, "allow_redirects": False}
    if row.json is not None:
        kwargs["json"] = row.json
    elif row.body is not None:
        kwargs["data"] = row.body()
    form = dict(row.form) if row.form is not None else None
    headers: dict[str, str] = {}
    if row.auth in ("session", "no-xsrf"):
        user = world.users[row.actor]
        session = user.user.session
        if row.auth == "session":
            headers["X-XSRFToken"] = user._xsrf()
            if form is not None:
                form["_xsrf"] = user._xsrf()
    elif row.auth == "forged-token":
        session = requests.Session()
        headers["Authorization"] = f"token {secrets.token_hex(16)}"
    elif row.auth == "forged-cookie":
        session = requests.Session()
        forged = f"2|1:0|10:1700000000|14:service-egress|44:{secrets.token_urlsafe(33)}|" + (
            secrets.token_hex(32)
        )
        session.cookies.set("service-egress", forged, path="/services/egress/")
        xsrf = secrets.token_urlsafe(24)
        session.cookies.set("_xsrf", xsrf, path="/services/egress/")
        headers["X-XSRFToken"] = xsrf
    else:  # pragma: no cover - a typo in the table
        raise AssertionError(f"unknown auth {row.auth!r}")
    if form is not None:
        kwargs["data"] = form
    return session.request(row.method, url, headers=headers, **kwargs)


def _message(response: requests.Response, page: bool) -> object:
    content_type = response.headers.get("Content-Type", "")
    if page:
        assert content_type.startswith("text/html"), content_type
        found = re.search(r'role="alert">\s*<p>(.*?)</p>', response.text, re.S)
        return html.unescape(found.group(1)).strip() if found else None
    assert content_type.startswith("application/json"), (content_type, response.text[:200])
    data = response.json()
    assert isinstance(data, dict) and data.get("status") == response.status_code, data
    return data.get("message")


def test_every_refusal_row_says_which_sentence_it_expects():
    """A row that accepted any 403 would pass for the wrong reason (issue #15)."""
    assert [row.id for row in HOSTILE if not row.mentions] == []
    forged = [row.id for row in HOSTILE if row.auth.startswith("forged")]
    assert forged and all(row.control for row in HOSTILE if row.auth.startswith("forged"))


@pytest.mark.parametrize("row", [row.param() for row in HOSTILE])
def test_hostile_request_is_refused_and_changes_nothing(world, row):
    if row.control is not None:  # the same resource, asked by someone allowed: it works
        actor, path = row.control
        allowed = world.users[actor].call("GET", path.format(**world.ids), allow_redirects=False)
        assert allowed.status_code == 200, (row.id, "control", allowed.status_code)
        print(f"{row.id}: control {actor} GET {path} -> {allowed.status_code}")
    before = world.snapshot()
    response = _send(world, row)
    after = world.snapshot()
    shown = f"{row.method} {row.path} as {row.actor} ({row.auth})"
    assert response.status_code in row.expect, (
        shown,
        response.status_code,
        response.headers.get("Location"),
        response.text[:300],
    )
    message = _message(response, row.page)
    assert _is_sentence(message, response.status_code), (shown, response.status_code, message)
    for word in row.mentions:
        assert word.lower() in str(message).lower(), (shown, word, message)
    assert after == before, f"{shown} changed something: {before} -> {after}"
    # nothing of the file leaks in a refusal
    assert "Bretagne" not in response.text


# ---------------------------------------------------------------------------- the deadlock


def _healthy(enclave, timeout: float = 3) -> bool:
    try:
        url = enclave.url + "services/egress/healthz"
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _revive_egress(enclave, world: World) -> None:
    """Restart a hung egress service and sign the module's users in to it again.

    The service signs its cookies with a secret made at start, so every session is renewed.
    """
    enclave.egress_container().restart(timeout=5)
    deadline = time.monotonic() + 90
    while not _healthy(enclave):
        assert time.monotonic() < deadline, "the egress service didn't come back"
        time.sleep(0.5)
    for name, user in list(world.users.items()):
        world.users[name] = Egress(user.user)


@pytest.mark.parametrize("variant", ["no-xsrf-cookie", "another-users-token-cookie"])
def test_xsrf_mismatch_is_refused_without_hanging_the_service(enclave, world, variant):
    """Run last in this module: when the bug is there, the service is restarted afterwards."""
    alice, bob = world.users["alice"], world.users["bob"]
    session = requests.Session()
    for cookie in alice.user.session.cookies:
        if cookie.name == "_xsrf" and variant == "no-xsrf-cookie":
            continue
        if cookie.name == "service-egress" and variant == "another-users-token-cookie":
            continue
        session.cookies.set_cookie(cookie)
    if variant == "another-users-token-cookie":
        for cookie in bob.user.session.cookies:
            if cookie.name == "service-egress":
                session.cookies.set_cookie(cookie)
    before = world.snapshot()
    response = None
    try:
        response = session.post(
            alice.base + f"api/requests/{world.ids['draft']}/withdraw",
            headers={"X-XSRFToken": alice._xsrf() or "stale"},
            timeout=5,
            allow_redirects=False,
        )
    except requests.Timeout:
        pass
    alive = _healthy(enclave)
    if not alive:
        _revive_egress(enclave, world)
    assert alive and response is not None, "the egress service hung on one request"
    assert response.status_code == 403, (response.status_code, response.text[:300])
    message = _message(response, page=False)
    assert _is_sentence(message, 403), message
    assert world.snapshot() == before
