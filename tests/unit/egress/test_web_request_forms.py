"""The request page's forms in the real tornado app (issue #20's dead ends).

* Withdraw and Reject can't be undone: their button leads to a confirmation page (a form of
  its own, no JavaScript needed) and nothing happens until it is confirmed; their buttons are
  styled as dangerous, unlike Submit and Approve.
* A refused form (adding a file the checks refuse, e.g. ``results.json``) shows the request's
  own page again with the refusal's sentence on it and what was chosen kept, instead of a bare
  error page linking to the list.

The browser sees the same pages in tests/e2e/test_request_forms_browser.py.
"""

from __future__ import annotations

import html as html_module
import re

import pytest
import requests

from tests.unit.egress.conftest import ACTORS
from tests.unit.egress.test_core import new_request, review
from tests.unit.egress.test_core import web_service as web_service  # the fixture

alice, bob = ACTORS["alice"], ACTORS["bob"]
olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]


def page(base: str, rid: str, user: str) -> str:
    answer = requests.get(base + f"requests/{rid}", headers={"X-Test-User": user}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def post(base: str, rid: str, user: str, **form: str) -> requests.Response:
    return requests.post(
        base + f"requests/{rid}/do",
        data=form,
        headers={"X-Test-User": user},
        allow_redirects=False,
        timeout=30,
    )


def button(html: str, action: str) -> str:
    found = re.search(rf'<button type="submit" id="action-{action}"[^>]*>', html)
    assert found, f"no {action} button"
    return found.group(0)


def test_withdraw_asks_for_a_confirmation_first_and_is_styled_as_dangerous(web_service, service):
    rid = new_request(service, {"notes.txt": "notes"}, submit=False)[0]
    html = page(web_service, rid, "alice")
    assert 'class="danger"' in button(html, "withdraw")
    assert "danger" not in button(html, "submit")  # Submit looks like an ordinary action

    asked = post(web_service, rid, "alice", action="withdraw")
    assert asked.status_code == 200
    assert 'id="confirm-withdraw"' in asked.text and "Withdraw this request?" in asked.text
    assert 'name="confirm" value="yes"' in asked.text and 'id="confirm-cancel"' in asked.text
    assert service.get_request(alice, rid)["state"] == "draft"  # nothing happened yet

    # someone who may not withdraw it gets no confirmation page, but the refusal
    refused = post(web_service, rid, "bob", action="withdraw", confirm="yes")
    assert refused.status_code in (403, 404) and "confirm-withdraw" not in refused.text
    assert service.get_request(alice, rid)["state"] == "draft"

    done = post(web_service, rid, "alice", action="withdraw", confirm="yes")
    assert done.status_code == 302 and done.headers["Location"].endswith(f"requests/{rid}")
    assert service.get_request(alice, rid)["state"] == "withdrawn"


def test_reject_asks_for_a_confirmation_first_and_approve_does_not(web_service, service):
    rid, files = new_request(service, {"notes.txt": "notes"})
    for checker in (olivia, oscar):
        review(service, rid, checker, {files["notes.txt"]["id"]: "approve"})
    html = page(web_service, rid, "oscar")
    assert 'class="danger"' in button(html, "reject")
    assert "danger" not in button(html, "approve")

    asked = post(web_service, rid, "oscar", action="reject")
    assert asked.status_code == 200 and 'id="confirm-reject"' in asked.text
    assert service.get_request(oscar, rid)["state"] == "reviewed"

    done = post(web_service, rid, "oscar", action="reject", confirm="yes")
    assert done.status_code == 302
    assert service.get_request(oscar, rid)["state"] == "rejected"


def test_a_refused_file_is_explained_on_the_request_s_own_page(
    web_service, service, outputs, json_log
):
    (outputs / "cardio" / "results.json").write_text('{"session": "metadata"}\n')
    rid = service.create_request(alice, "cardio", "Results")["id"]

    refused = post(web_service, rid, "alice", action="add_file", path="results.json", group="g1")
    assert refused.status_code == 422
    html = refused.text
    assert 'id="form-refusal"' in html and 'role="alert"' in html
    sentence = re.search(r'id="form-refusal">\s*<p>([^<]+)</p>', html).group(1)
    assert len(sentence.split()) >= 4, sentence  # a sentence, not a status
    assert "<h2>Results</h2>" in html and 'data-state="draft"' in html  # the request's page
    assert 'id="add-file"' in html  # ...with the form to try another file
    assert '<option value="results.json" selected>' in html  # what was chosen is kept
    assert 'name="group" value="g1"' in html
    assert service.get_request(alice, rid)["files"] == []
    (logged,) = json_log.events("egress.file_refused")  # the SIEM's line
    assert (logged["user"], logged["request_id"], logged["status"]) == ("alice", rid, 422)
    assert html_module.unescape(sentence) in logged["message"]

    # control: a table is added, and the answer leads back to the request
    added = post(web_service, rid, "alice", action="add_file", path="tables/smoking.csv")
    assert added.status_code == 302 and added.headers["Location"].endswith(f"requests/{rid}")
    assert [f["path"] for f in service.get_request(alice, rid)["files"]] == ["tables/smoking.csv"]
    assert len(json_log.events("egress.file_refused")) == 1


@pytest.mark.parametrize("status", [403, 404])
def test_refusals_about_the_request_itself_keep_the_error_page(
    web_service, service, status, json_log
):
    rid = service.create_request(alice, "cardio", "Private")["id"]
    target = rid if status == 403 else "nosuchrequest"
    answer = post(web_service, target, "bob", action="add_file", path="notes.txt")
    assert answer.status_code in (403, 404)
    assert "form-refusal" not in answer.text and "Back to the release requests" in answer.text
    refusals = json_log.events("egress.refused")
    if answer.status_code == 403:  # a refusal for lack of permission: the SIEM's line
        (logged,) = refusals
        assert (logged["user"], logged["request_id"], logged["status"]) == ("bob", rid, 403)
    else:  # no such request: not a security event
        assert refusals == []


@pytest.fixture
def hub_token(monkeypatch):
    """The egress service's hub API token, as the hub gives it (before the app starts)."""
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token-for-the-test")
    return "hub-token-for-the-test"


def test_a_forged_break_glass_report_is_a_security_event(hub_token, web_service, json_log):
    """Someone without the hub's key posting a break-glass report (to fake or hide a step):
    refused, and the SIEM's line says so; the hub's own report (the control) is taken."""
    from havre.enclave.break_glass import hub_key

    event = {
        "event": "activated",
        "session": "0123456789abcdef0123456789abcdef",
        "user": "sam",
        "reason": "INC-1: a hung kernel",
        "target": "alice",
        "until": "2026-12-06T23:00:00Z",
    }
    url = web_service + "api/break-glass/events"
    forged = requests.post(url, json=event, headers={"Authorization": "Bearer guess"}, timeout=30)
    assert forged.status_code == 403
    (logged,) = json_log.events("egress.refused")
    assert logged["status"] == 403 and logged["client_ip"] == "127.0.0.1"
    good = {"Authorization": f"Bearer {hub_key(hub_token)}"}
    taken = requests.post(url, json=event, headers=good, timeout=30)
    assert taken.status_code == 201, taken.text
    assert len(json_log.events("egress.refused")) == 1
