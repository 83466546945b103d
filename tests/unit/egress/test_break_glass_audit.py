"""Break glass in the egress service: the hub's reports become audit events, checkers are told.

The endpoint itself (the key, the route) is exercised against the live service by
``tests/integration/test_break_glass.py``; here, the record it writes.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from egress.domain.policy import PermissionDenied
from egress.operations.break_glass import key_matches, parse_event, record, sessions
from egress.operations.facade import CHECKERS_MARKER, InvalidInput
from egress.store.db import read_session
from egress.store.models import Notification
from havre.enclave.break_glass import hub_key
from tests.unit.egress.conftest import ACTORS

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SESSION = "0123456789abcdef0123456789abcdef"
ACTIVATED = {
    "event": "activated",
    "session": SESSION,
    "user": "sam",
    "reason": "INC-4711: alice's kernel hangs",
    "target": "alice/cardio",
    "until": "2026-03-01T10:00:00Z",
}


@SQLITE
def test_activation_use_and_end_are_audited_and_the_log_verifies(service):
    record(service, ACTIVATED)
    record(service, {"event": "used", "session": SESSION, "user": "sam", "server": "alice/cardio"})
    record(service, {"event": "ended", "session": SESSION, "user": "sam", "why": "logout"})
    assert service.verify_audit().ok
    (found,) = sessions(service, ACTORS["olivia"])
    assert found["user"] == "sam" and found["target"] == "alice/cardio"
    assert found["reason"] == ACTIVATED["reason"] and found["ended_why"] == "logout"
    assert [o["server"] for o in found["servers_opened"]] == ["alice/cardio"]
    assert found["active"] is False


@SQLITE
def test_an_activation_notifies_every_checker_with_who_why_and_until(service):
    record(service, ACTIVATED)
    with read_session(service.engine) as session:
        (note,) = session.execute(select(Notification)).scalars()
        to, subject, body = json.loads(note.to), note.subject, note.body
    # the listed checkers, and everyone in the checkers' hub group at delivery (never sam)
    assert sorted(to) == sorted(["amy", "chloe", "olivia", "oscar", f"{CHECKERS_MARKER}sam"])
    assert "sam" in subject and ACTIVATED["reason"] in body and "2026-03-01T10:00:00Z" in body


@SQLITE
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_researchers_do_not_see_sessions(service, who):
    record(service, ACTIVATED)
    with pytest.raises(PermissionDenied, match="Only output checkers and administrators"):
        sessions(service, ACTORS[who])
    assert sessions(service, ACTORS["adam"])  # control: an administrator sees them


@SQLITE
@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"event": "granted"}, "'event' must be one of"),
        ({"session": "xyz"}, "'session' must be 32 hexadecimal"),
        ({"user": "Sam Smith"}, "'user' must be a hub user name"),
        ({"reason": "short"}, "'reason' must be a text of 10 to 500"),
        ({"target": "*"}, "'target' must be any"),
        ({"until": "tomorrow"}, "'until' must be a UTC time"),
    ],
)
def test_malformed_reports_are_refused_with_a_sentence_and_write_nothing(service, change, sentence):
    before = service.verify_audit().events_checked
    with pytest.raises(InvalidInput, match=sentence):
        record(service, {**ACTIVATED, **change})
    assert service.verify_audit().events_checked == before


def test_only_the_hubs_derived_key_is_accepted():
    token = "the-egress-services-hub-token"
    assert key_matches(f"Bearer {hub_key(token)}", token)  # control
    assert not key_matches(f"Bearer {token}", token)  # the token itself is not the key
    assert not key_matches(f"Bearer {hub_key('other')}", token)
    assert not key_matches(f"token {hub_key(token)}", token)
    assert not key_matches(None, token)
    assert not key_matches(f"Bearer {hub_key('')}", "")  # no token configured: nobody


def test_parse_event_rejects_non_objects():
    with pytest.raises(InvalidInput, match="JSON object"):
        parse_event(["activated"])
