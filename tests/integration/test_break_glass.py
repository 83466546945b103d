"""Break glass on the live enclave: activation with a reason, a time limit, audit, checkers told.

A user in the provider's break-glass group (``havre-server-access`` in the demo config) is
only *eligible*: opening alice's server is refused until they activate break glass on
``/hub/break-glass``; after activation the same request goes through (the control). Each way
a window ends (the user ends it, it expires, logout, the provider drops the group) is tried,
and the same request is refused again. The egress service's audit log holds the activation,
each server opened and the end, and still verifies; the output checkers got a notification.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from html import unescape

import pytest
import requests

from havre.enclave.break_glass import hub_key
from tests.integration.hub_client import HubUser
from tests.integration.test_egress_flow import Egress
from tests.integration.test_identity import Provider
from tests.log_capture import container_events

pytestmark = pytest.mark.docker

REASON = "INC-4711: alice's kernel hangs at start, she asked for help"
TABLE: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module")
def provider(enclave) -> Provider:
    return Provider(enclave)


def eligible(enclave, provider: Provider, name: str, groups: list[str] | None = None) -> HubUser:
    groups = ["havre-server-access"] if groups is None else groups
    return HubUser(enclave.url, name, provider.put_user(name, groups)).login()


def hub_groups(user: HubUser) -> list[str]:
    r = user.api("GET", f"users/{user.name}")
    assert r.status_code == 200, r.text
    return sorted(r.json()["groups"])


def break_glass(user: HubUser, **form: str) -> requests.Response:
    """POST the hub's break-glass form (activate by default) with the hub's XSRF token."""
    page = user.session.get(user.url("hub/break-glass"), timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]*)"', page.text)
    token = unescape(xsrf.group(1)) if xsrf else user.session.cookies.get("_xsrf", path="/hub/")
    fields = {"_xsrf": token or "", "action": "activate", **form}
    return user.session.post(user.url("hub/break-glass"), data=fields, timeout=30)


def open_alice(user: HubUser) -> requests.Response:
    """Open alice's cardio server as a browser does: through the hub's OAuth (and its consent
    page, which names the server), then a request to the server's API."""
    r = user.session.get(user.url("user/alice/cardio/lab"), timeout=30)
    if r.status_code == 200 and "/hub/api/oauth2/authorize" in r.url and "Authorize" in r.text:
        fields = re.findall(r'<input type="hidden" name="(_xsrf|scopes)" value="([^"]*)"', r.text)
        r = user.session.post(r.url, data=[(k, unescape(v)) for k, v in fields], timeout=30)
    if r.status_code == 200 and "/user/alice/cardio/" in r.url:
        r = user.session.get(user.url("user/alice/cardio/api/status"), timeout=30)
    return r


def refused_now(user: HubUser) -> tuple[int, str] | None:
    """The status and address of the server's answer to ``user`` when it does not let them
    in, else None."""
    r = user.session.get(user.url("user/alice/cardio/api/status"), timeout=30)
    return None if reached(r) else (r.status_code, r.url)


def reached(r: requests.Response) -> bool:
    return r.status_code == 200 and "/user/alice/cardio/api/status" in r.url and "started" in r.text


def sessions_of(enclave, name: str) -> list[dict]:
    olivia = Egress(enclave.user("olivia"))
    return [s for s in olivia.ok("GET", "api/break-glass") if s["user"] == name]


def wait_for(condition, timeout: float, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def audit_ok(enclave) -> int:
    verified = Egress(enclave.user("olivia")).ok("GET", "api/audit/verify")
    assert verified["ok"], verified
    return verified["events_checked"]


def row(exit_: str, control: str, result: str) -> None:
    TABLE.append((exit_, control, result))
    print(f"{exit_:<58} | {control:<34} | {result}")


def test_activation_is_needed_and_then_opens_the_server_audited(enclave, provider, alice_cardio):
    sam = eligible(enclave, provider, "bg-sam")
    assert hub_groups(sam) == ["break-glass"]  # eligible; the provider's group grants nothing
    assert 'id="havre-break-glass"' in sam.session.get(sam.url("hub/home"), timeout=30).text
    assert (
        'id="havre-break-glass"'
        not in alice_cardio[0].session.get(alice_cardio[0].url("hub/home"), timeout=30).text
    )  # the home page offers it to eligible users only
    since = time.time() - 1  # the hub's real log from here on (docker logs --since: seconds)
    refused = open_alice(sam)
    assert refused.status_code == 403 and "/hub/api/oauth2/authorize" in refused.url
    assert "activating break glass with a reason" in unescape(refused.text)

    events = audit_ok(enclave)
    page = break_glass(sam, reason=REASON, target="alice/cardio", minutes="5")
    assert page.status_code == 200 and "Break glass is active" in page.text, page.text[-800:]
    assert hub_groups(sam) == ["break-glass", "server-access"]
    control = open_alice(sam)
    assert reached(control), (control.status_code, control.url)
    row("eligible, not activated: open alice/cardio", "after activation: 200", "403 (sentence)")

    # ending it takes the access away at once: the server's next token check is refused
    ended = break_glass(sam, action="end")
    assert ended.status_code == 200 and "Activate break glass" in ended.text
    # (a server keeps the hub's answer about a token for a second)
    after = wait_for(lambda: refused_now(sam), timeout=10)
    assert after is not None and after[0] == 403, after
    assert hub_groups(sam) == ["break-glass"]
    row("ended by the user, then the same request", "before: 200", f"{after[0]}")

    # the hub's own log (docker logs, what a SIEM collects): one JSON line per step, each at
    # WARNING under its stable event name, with who, which server and which window
    hub = enclave.docker.containers.get(f"{enclave.config.name}-hub")
    refusals = [
        e for e in container_events(hub, "break_glass.refused", since) if e["user"] == "bg-sam"
    ]
    assert refusals and refusals[0]["target"] == "alice/cardio" and refusals[0]["service"] == "hub"
    (activated,) = [
        e for e in container_events(hub, "break_glass.activated", since) if e["user"] == "bg-sam"
    ]
    assert activated["target"] == "alice/cardio" and activated["session_id"]
    used = [e for e in container_events(hub, "break_glass.used", since) if e["user"] == "bg-sam"]
    assert used and {e["session_id"] for e in used} == {activated["session_id"]}
    assert {e["target"] for e in used} == {"alice/cardio"}
    ended_lines = container_events(hub, "break_glass.ended", since)
    assert [e["why"] for e in ended_lines if e["user"] == "bg-sam"][:1] == ["ended by the user"]

    # the audit log: activation, the server opened, the end; and it still verifies
    (session,) = sessions_of(enclave, "bg-sam")
    assert session["reason"] == REASON and session["target"] == "alice/cardio"
    assert [o["server"] for o in session["servers_opened"]] == ["alice/cardio"]
    assert session["ended_why"] == "ended by the user" and session["active"] is False
    assert audit_ok(enclave) == events + 3

    # every output checker was told, with who, why and until
    db = sqlite3.connect(enclave.config.state_dir / "egress" / "egress.db")
    try:
        notes = db.execute(
            "SELECT recipients, subject, body FROM ("
            "SELECT `to` AS recipients, subject, body, event FROM notifications_outbox) "
            "WHERE event = 'break_glass' AND subject LIKE '%bg-sam%'"
        ).fetchall()
    finally:
        db.close()
    (recipients, subject, body), *_ = notes
    assert "@output-checkers-except:bg-sam" in recipients  # every checker of the hub group
    assert REASON in body and "until" in body and "alice/cardio" in subject

    # the checkers' page lists it; a researcher can't read the sessions
    olivia = Egress(enclave.user("olivia"))
    listing = olivia.call("GET", "break-glass")
    assert listing.status_code == 200 and "bg-sam" in listing.text and "INC-4711" in listing.text
    assert 'id="nav-break-glass"' in olivia.call("GET", "").text  # linked from every page
    alice = Egress(alice_cardio[0])
    refused = alice.call("GET", "api/break-glass")
    assert refused.status_code == 403 and "Only output checkers" in refused.json()["message"]


@pytest.mark.parametrize(
    ("form", "sentence"),
    [
        ({"reason": "", "target": "alice"}, "Give a reason"),
        ({"reason": "fix it", "target": "alice"}, "too short"),
        ({"reason": REASON, "target": "alice/cardio/lab"}, "Name the server you need"),
        ({"reason": REASON, "target": "alice", "minutes": "61"}, "from 1 to 60"),
    ],
)
def test_activation_without_a_sound_reason_target_or_duration_is_refused(
    enclave, provider, form, sentence
):
    tess = eligible(enclave, provider, "bg-tess")
    events = audit_ok(enclave)
    r = break_glass(tess, **form)
    assert r.status_code == 400 and sentence in unescape(r.text), r.text[-800:]
    assert hub_groups(tess) == ["break-glass"]  # nothing granted
    assert audit_ok(enclave) == events  # nothing written
    assert sessions_of(enclave, "bg-tess") == []


@pytest.mark.parametrize("who", ["alice", "adam"])
def test_researchers_and_administrators_cannot_activate(enclave, provider, who):
    user = enclave.user(who)
    r = break_glass(user, reason=REASON, target="any")
    assert r.status_code == 403 and "not in a break-glass group" in unescape(r.text)
    assert "server-access" not in hub_groups(user)
    # control: an eligible user gets the form
    control = eligible(enclave, provider, "bg-control")
    page = control.session.get(control.url("hub/break-glass"), timeout=30)
    assert page.status_code == 200 and "Activate break glass" in page.text
    row(f"{who} activates break glass", "eligible user: the form", "403 (sentence)")


@pytest.mark.parametrize("group", ["break-glass", "server-access"])
def test_an_administrator_cannot_make_himself_eligible_or_grant_access(enclave, group):
    adam = enclave.user("adam")
    assert adam.api("GET", f"groups/{group}").status_code == 200  # control: he reads it
    r = adam.api("POST", f"groups/{group}/users", json={"users": ["adam"]})
    assert r.status_code == 403, r.text
    assert "adam" not in adam.api("GET", f"groups/{group}").json()["users"]


def test_a_window_covers_only_its_target(enclave, provider, alice_cardio):
    uma = eligible(enclave, provider, "bg-uma")
    page = break_glass(uma, reason=REASON, target="bob", minutes="5")
    assert "Break glass is active" in page.text
    r = open_alice(uma)
    assert r.status_code == 403 and "covers bob, not alice/cardio" in unescape(r.text)
    # a posted form naming another client beside the address's is refused, not mixed up
    fields = {"_xsrf": uma.session.cookies.get("_xsrf", path="/hub/") or "", "client_id": "x"}
    posted = uma.session.post(r.url, data=fields, timeout=30)
    assert posted.status_code == 400 and "names one client" in unescape(posted.text)
    break_glass(uma, action="end")
    page = break_glass(uma, reason=REASON, target="alice", minutes="5")
    assert reached(open_alice(uma))  # control: a window naming alice
    break_glass(uma, action="end")
    row("window for bob: open alice/cardio", "window for alice: 200", "403 (sentence)")


def test_an_expired_window_gives_no_access(enclave, provider, alice_cardio):
    vic = eligible(enclave, provider, "bg-vic")
    page = break_glass(vic, reason=REASON, target="any", minutes="1")
    assert "Break glass is active" in page.text
    assert reached(open_alice(vic))  # control, within the window
    # at most a minute to the end, and the hub's token cache (a second) after it
    refused = wait_for(lambda: refused_now(vic), timeout=90)
    assert refused is not None, "still reached alice's server 90 s after a one-minute window"
    assert refused[0] == 403, refused
    assert "server-access" not in hub_groups(vic)
    # the end is reported by the check at use time or the hub's sweep, whichever came first
    ended = wait_for(lambda: [s for s in sessions_of(enclave, "bg-vic") if s["ended"]], 30)
    assert ended and ended[0]["ended_why"] == "expired" and ended[0]["active"] is False
    audit_ok(enclave)
    row("one-minute window, after it", "within it: 200", f"{refused[0]}")


def test_logout_ends_the_window(enclave, provider, alice_cardio):
    wes = eligible(enclave, provider, "bg-wes")
    assert "Break glass is active" in break_glass(wes, reason=REASON, target="alice").text
    assert reached(open_alice(wes))
    wes.session.get(wes.url("hub/logout"), timeout=30)
    again = HubUser(enclave.url, "bg-wes", wes.password).login()
    assert hub_groups(again) == ["break-glass"]
    assert open_alice(again).status_code == 403
    (session,) = sessions_of(enclave, "bg-wes")
    assert session["ended_why"] == "logout"
    row("logout, sign in again, open alice/cardio", "before logout: 200", "403")


def test_leaving_the_providers_group_ends_the_window(enclave, provider, alice_cardio):
    xia = eligible(enclave, provider, "bg-xia", ["havre-server-access", "project-diabetes"])
    assert "Break glass is active" in break_glass(xia, reason=REASON, target="alice").text
    assert reached(open_alice(xia))
    provider.set_groups("bg-xia", ["project-diabetes"])
    again = HubUser(enclave.url, "bg-xia", xia.password).login()  # the next sign-in
    assert hub_groups(again) == ["project-diabetes"]
    assert open_alice(again).status_code == 403
    (session,) = sessions_of(enclave, "bg-xia")
    assert session["ended_why"] == "left the group"
    row("provider drops the group, next sign-in", "in the group: 200", "403")


def test_only_the_hub_can_write_break_glass_events(enclave):
    url = enclave.url.rstrip("/") + "/services/egress/api/break-glass/events"
    token = (enclave.config.state_dir / "secrets" / "egress-api-token").read_text().strip()
    body = {
        "event": "ended",
        "session": secrets.token_hex(16),
        "user": "bg-nobody",
        "why": "logout",
    }
    events = audit_ok(enclave)
    for header in ({}, {"Authorization": f"Bearer {token}"}, {"Authorization": "Bearer x"}):
        r = requests.post(url, json=body, headers=header, timeout=30)
        assert r.status_code == 403 and "Only the hub" in r.json()["message"], r.text
    assert audit_ok(enclave) == events
    # control: the hub's derived key (read here from the hub's secret) is accepted
    r = requests.post(
        url, json=body, headers={"Authorization": f"Bearer {hub_key(token)}"}, timeout=30
    )
    assert r.status_code == 201, r.text
    assert audit_ok(enclave) == events + 1
    row("forge a break-glass event (no key, the token, a guess)", "the hub's key: 201", "403")


def test_activation_fails_closed_when_the_audit_log_cannot_record_it(enclave, provider):
    yan = eligible(enclave, provider, "bg-yan")
    egress = enclave.egress_container()
    egress.stop(timeout=10)
    try:
        r = break_glass(yan, reason=REASON, target="alice", minutes="5")
        assert r.status_code == 503, (r.status_code, r.text[-500:])
        assert "never used unrecorded" in unescape(r.text)
        assert hub_groups(yan) == ["break-glass"]  # nothing granted
        assert open_alice(yan).status_code == 403
    finally:
        egress.start()
        health = enclave.url.rstrip("/") + "/services/egress/healthz"

        def healthy() -> bool:
            try:
                return requests.get(health, timeout=5).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(healthy, timeout=60), "the egress service did not come back"
    # control: the same activation once the audit log answers
    page = wait_for(
        lambda: (
            (r := break_glass(yan, reason=REASON, target="alice", minutes="5")).status_code == 200
            and r
        ),
        timeout=30,
    )
    assert page is not None and "Break glass is active" in page.text
    (session,) = sessions_of(enclave, "bg-yan")  # only the activation that was recorded
    assert session["active"]
    break_glass(yan, action="end")
    row("activate while the audit log is down", "the audit log up: active", "503 (sentence)")


def test_print_table():
    """The break-glass rows, as the coordinator quotes them (run last in this file)."""
    print("\nbreak glass (control vs result)")
    for exit_, control, result in TABLE:
        print(f"  {exit_:<58} | {control:<34} | {result}")
