"""The egress service's web exits (issue #12) and retried writes (issue #13), on the live enclave.

Each row of the exits table is one way a person could take bytes of an unreleased file out
through the browser. It runs a positive control first (the same route, by someone allowed: a
checker once the request is submitted, or a member after release) and then the attempt, and
prints both. Every answer that serves bytes or a preview must add one audit event (counted
with ``api/audit/verify``); a refusal adds none and carries a sentence.

The data copied into ``outputs/`` is a stand-in for ``/data`` with recognisable cells; a
refusal or a preview must never contain them.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import secrets
import zipfile

import pytest

from tests.integration.test_egress_flow import Egress

pytestmark = pytest.mark.docker

NAME = "copied_from_data.csv"
DATA = "patient_id,diagnosis\nP-77120,HIV\nP-77121,hepatitis C\nP-77122,HIV\n"
CELLS = ("P-77120", "hepatitis C")


def _events(checker: Egress) -> int:
    verified = checker.ok("GET", "api/audit/verify")
    assert verified["ok"], verified
    return verified["events_checked"]


def _message(response) -> str:
    if response.headers.get("Content-Type", "").startswith("application/json"):
        return str(response.json().get("message", ""))
    found = re.search(r'role="alert">\s*<p>(.*?)</p>', response.text, re.S)
    return html.unescape(found.group(1)).strip() if found else response.text[:200]


@pytest.fixture(scope="module")
def people(enclave):
    users = {n: Egress(enclave.user(n)) for n in ("alice", "carol", "olivia", "oscar")}
    path = enclave.config.outputs_dir("cardio") / NAME
    path.write_text(DATA)
    os.chown(path, 1000, 1000)
    os.chmod(path, 0o640)
    return users


def _draft(alice: Egress) -> tuple[str, str]:
    rid = alice.ok("POST", "api/requests", 201, json={"project": "cardio", "title": "Exit"})["id"]
    detail = alice.ok("POST", f"api/requests/{rid}/files", 201, json={"path": NAME})
    alice.ok("PUT", f"api/requests/{rid}/groups/main", json={"context": "c", "controls": "k"})
    return rid, str(detail["file"]["id"])


ROWS: list[str] = []


def _row(name: str, control: str, result: str) -> None:
    ROWS.append(f"{name:<48} control: {control:<34} result: {result}")
    print(ROWS[-1])


def _refused(user: Egress, path: str, *, words: str, status: int = 403) -> str:
    response = user.call("GET", path, allow_redirects=False)
    message = _message(response)
    assert response.status_code == status, (path, response.status_code, message)
    assert words.lower() in message.lower(), (path, message)
    for cell in CELLS:
        assert cell not in response.text, (path, cell)
    return f"{response.status_code} '{words}'"


def _served(user: Egress, path: str, checker: Egress, *, contains: str | None = None) -> str:
    before = _events(checker)
    response = user.call("GET", path, allow_redirects=False)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    if contains is not None:
        assert contains in response.text, path
    after = _events(checker)
    assert after == before + 1, (path, "every byte served is one audit event", before, after)
    return "200, audited"


def test_no_unreleased_byte_leaves_through_the_egress_service(people):
    alice, carol, olivia, oscar = (people[n] for n in ("alice", "carol", "olivia", "oscar"))
    rid, fid = _draft(alice)
    raw, page = f"requests/{rid}/files/{fid}/raw", f"requests/{rid}/files/{fid}"
    preview = f"api/requests/{rid}/files/{fid}/preview"

    # draft: the author and a co-member get a preview (audited), never the bytes
    control = _served(alice, preview, olivia)
    shown = alice.ok("GET", preview)
    assert shown["shape"] == {"rows": 4, "columns": 2}
    assert not any(cell in str(shown) for cell in CELLS)
    _row("preview by author (draft)", "-", control)
    _row("file page by author (draft)", "-", _served(alice, page, olivia))
    for cell in CELLS:
        assert cell not in alice.call("GET", page).text
        assert cell not in alice.call("GET", f"api/requests/{rid}").text
    result = _refused(alice, raw, words="never gives authors")
    _row("raw by author (draft)", "(checker after submission, below)", result)
    result = _refused(carol, raw, words="Only output checkers see the contents")
    _row("raw by co-member (draft)", "(checker after submission, below)", result)
    # a checker before submission: the request isn't even shown
    result = _refused(olivia, raw, words="has not been submitted")
    _row("raw by checker before submission", "(same route after submission)", result)
    _row(
        "request by checker before submission",
        "-",
        _refused(olivia, f"api/requests/{rid}", words="has not been submitted"),
    )
    assert rid not in [r["id"] for r in olivia.ok("GET", "api/requests")]

    alice.ok("POST", f"api/requests/{rid}/submit")
    control = _served(olivia, raw, olivia)
    assert olivia.call("GET", raw).text == DATA  # the checker sees exactly the bytes
    _row("raw by author (submitted)", control, _refused(alice, raw, words="never gives authors"))
    _row("raw by checker (submitted)", "-", control)

    # withdrawn after submission: still nothing for the author
    other, other_fid = _draft(alice)
    alice.ok("POST", f"api/requests/{other}/withdraw")
    result = _refused(olivia, f"requests/{other}/files/{other_fid}/raw", words="has not been")
    _row("raw by checker (withdrawn, never submitted)", "-", result)
    alice.ok("POST", f"api/requests/{rid}/withdraw")
    result = _refused(alice, raw, words="never gives authors")
    _row("raw by author (withdrawn)", control, result)


def test_release_download_is_the_way_out_and_is_audited(people):
    alice, carol, olivia, oscar = (people[n] for n in ("alice", "carol", "olivia", "oscar"))
    rid, fid = _draft(alice)
    alice.ok("POST", f"api/requests/{rid}/submit")
    for checker in (olivia, oscar):
        checker.ok("PUT", f"api/requests/{rid}/files/{fid}/vote", json={"vote": "approve"})
        checker.ok("POST", f"api/requests/{rid}/review")
    oscar.ok("POST", f"api/requests/{rid}/approve")
    download = f"requests/{rid}/files/{fid}/download"
    result = _refused(carol, download, words="only released files", status=409)
    archive = f"requests/{rid}/release.zip"
    zip_refusals = (
        _refused(alice, archive, words="only a released request", status=409),
        _refused(carol, archive, words="only a released request", status=403),
    )
    oscar.ok("POST", f"api/requests/{rid}/release")
    control = _served(carol, download, olivia, contains="P-77120")
    _row("download by co-member (approved, not released)", control, result)
    _row("zip of the request by author (approved)", "(co-member after release)", zip_refusals[0])
    _row("zip of the request by co-member (approved)", "(after release)", zip_refusals[1])
    # after release, the zip is exactly the released bytes plus the signed record, audited
    _row("zip of the request by co-member (released)", "-", _served(carol, archive, olivia))
    served = carol.call("GET", archive)
    assert served.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(served.content)) as opened:
        assert sorted(opened.namelist()) == sorted([NAME, "havre-release-record.json"])
        assert opened.read(NAME).decode() == DATA
        record = json.loads(opened.read("havre-release-record.json"))
    assert record == olivia.ok("GET", f"api/requests/{rid}/record")
    _row(
        "raw by author (released)",
        control,
        _refused(alice, f"requests/{rid}/files/{fid}/raw", words="never gives authors"),
    )
    events = olivia.call("GET", f"audit?request={rid}").text
    assert "DOWNLOADED" in events and "carol" in events


def test_a_retried_create_returns_the_first_answer_and_makes_no_duplicate(people):
    alice = people["alice"]
    key = secrets.token_urlsafe(16)
    body = {"project": "cardio", "title": "Sent twice"}

    def post(json_body):
        headers = {"X-XSRFToken": alice._xsrf(), "Idempotency-Key": key}
        return alice.user.session.post(
            alice.base + "api/requests", json=json_body, headers=headers, timeout=60
        )

    before = {r["id"] for r in alice.ok("GET", "api/requests?limit=500")}
    first = post(body)
    assert first.status_code == 201, first.text
    again = post(body)  # the first response was lost; the client retries
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers.get("Idempotent-Replayed") == "true"
    after = {r["id"] for r in alice.ok("GET", "api/requests?limit=500")}
    assert after - before == {first.json()["id"]}  # one draft, not two
    reused = post({**body, "title": "Another"})
    assert reused.status_code == 422 and "different request" in reused.json()["message"]

    # the request page's forms each carry a fresh key; a form sent twice comments once
    rid = first.json()["id"]
    page = alice.call("GET", f"requests/{rid}").text
    keys = re.findall(r'name="_idempotency_key" value="([^"]+)"', page)
    assert keys and len(set(keys)) == len(keys)
    form = {
        "action": "comment",
        "body": "sent twice",
        "_xsrf": alice._xsrf(),
        "_idempotency_key": keys[-1],
    }
    for _ in range(2):
        sent = alice.user.session.post(
            alice.base + f"requests/{rid}/do", data=form, timeout=60, allow_redirects=False
        )
        assert sent.status_code == 302, (sent.status_code, sent.text[:300])
    comments = alice.ok("GET", f"api/requests/{rid}")["comments"]
    assert [c["body"] for c in comments] == ["sent twice"]
