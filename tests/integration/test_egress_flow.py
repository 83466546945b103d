"""The release story through the real hub, the real egress service and its real database.

A researcher writes a table in her notebook, asks for its release through the egress service's
API with her browser session, two checkers review it, it is released, and she downloads exactly
the approved bytes. Every call goes through the hub's proxy with the users' own sessions.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.integration.hub_client import HubUser
from tests.log_capture import container_events

pytestmark = pytest.mark.docker

TABLE = "region,cases\nBretagne,40\nOccitanie,55\nNormandie,23\n"


class Egress:
    """The egress service's API, with a user's hub session (cookie + JupyterHub's _xsrf)."""

    def __init__(self, user: HubUser) -> None:
        self.user = user
        self.base = user.url("services/egress/")
        page = user.session.get(self.base, timeout=30)  # OAuth with the hub; sets _xsrf
        assert page.status_code == 200, (page.status_code, page.url)

    def _xsrf(self) -> str:
        for cookie in self.user.session.cookies:
            if cookie.name == "_xsrf" and cookie.path.startswith("/services/egress"):
                return cookie.value
        return ""

    def call(self, method: str, path: str, **kwargs):
        headers = {"X-XSRFToken": self._xsrf()}
        return self.user.session.request(
            method, self.base + path, headers=headers, timeout=60, **kwargs
        )

    def ok(self, method: str, path: str, status: int = 200, **kwargs) -> dict:
        r = self.call(method, path, **kwargs)
        assert r.status_code == status, (method, path, r.status_code, r.text[:500])
        return r.json()


def test_researcher_to_release_with_two_independent_reviews(enclave, alice_cardio):
    alice, _container = alice_cardio
    out = alice.run_code("cardio", f"open('outputs/cases_by_region.csv','w').write({TABLE!r})")
    assert out["error"] is None, out

    researcher = Egress(alice)
    assert researcher.ok("GET", "api/whoami")["projects"] == ["cardio"]
    outputs = researcher.ok("GET", "api/projects/cardio/outputs")
    assert "cases_by_region.csv" in [f["path"] for f in outputs["files"]]

    request = researcher.ok(
        "POST", "api/requests", 201, json={"project": "cardio", "title": "Cases by region"}
    )
    rid = request["id"]
    added = researcher.ok(
        "POST", f"api/requests/{rid}/files", 201, json={"path": "cases_by_region.csv"}
    )
    assert (added["id"], added["state"]) == (rid, "draft")  # what the write changed (#21)
    (table,) = researcher.ok("GET", f"api/requests/{rid}")["files"]
    assert (added["file"]["id"], added["file"]["sha256"]) == (table["id"], table["sha256"])
    assert table["sha256"] == hashlib.sha256(TABLE.encode()).hexdigest()
    # written by hand, no library record: nothing says these are counts (issue #11)
    assert table["check"]["sdc"]["checked"] and table["check"]["sdc"]["verdict"] == "review"
    assert table["check"]["sdc"]["count_rules"]["verdict"] == "pass"
    # no context yet: submitting is refused with the reason, and nothing changes
    refused = researcher.call("POST", f"api/requests/{rid}/submit")
    assert refused.status_code == 409 and "context" in refused.json()["message"]
    researcher.ok(
        "PUT",
        f"api/requests/{rid}/groups/main",
        json={"context": "Stays by region, 2025", "controls": "All cells >= 10"},
    )
    assert researcher.ok("POST", f"api/requests/{rid}/submit")["state"] == "submitted"

    # the author can't review; a member of another project doesn't even see the request
    since = time.time() - 1  # the egress container's real log from here on
    assert (
        researcher.call(
            "PUT", f"api/requests/{rid}/files/{table['id']}/vote", json={"vote": "approve"}
        ).status_code
        == 403
    )
    bob = Egress(enclave.user("bob"))
    assert bob.call("GET", f"api/requests/{rid}").status_code == 403
    # each refusal is one JSON line at WARNING in the service's own log (docker logs)
    refusals = container_events(enclave.egress_container(), "egress.refused", since, expect=2)
    assert {(e["user"], e["request_id"], e["status"]) for e in refusals} >= {
        (researcher.user.name, rid, 403),
        ("bob", rid, 403),
    }
    assert all(e["service"] == "egress" for e in refusals)

    olivia, oscar = Egress(enclave.user("olivia")), Egress(enclave.user("oscar"))
    queue = olivia.ok("GET", "api/requests?mine_to_review=1")
    assert rid in [q["id"] for q in queue]
    olivia.ok("PUT", f"api/requests/{rid}/files/{table['id']}/vote", json={"vote": "approve"})
    assert olivia.ok("POST", f"api/requests/{rid}/review")["state"] == "under_review"
    # independent reviews: oscar doesn't see olivia's vote before his own review is in
    seen = oscar.ok("GET", f"api/requests/{rid}")["files"][0]["votes"]
    assert "olivia" not in seen
    oscar.ok("PUT", f"api/requests/{rid}/files/{table['id']}/vote", json={"vote": "approve"})
    assert oscar.ok("POST", f"api/requests/{rid}/review")["state"] == "reviewed"
    assert oscar.ok("POST", f"api/requests/{rid}/approve")["state"] == "approved"
    assert oscar.ok("POST", f"api/requests/{rid}/release")["state"] == "released"

    download = researcher.call("GET", f"requests/{rid}/files/{table['id']}/download")
    assert download.status_code == 200
    assert download.content == TABLE.encode()  # exactly the approved bytes
    assert "attachment" in download.headers["Content-Disposition"]

    record = researcher.ok("GET", f"api/requests/{rid}/record")
    assert record["record"]["files"][0]["sha256"] == table["release_sha256"]
    assert record["signature"]["algorithm"] == "ed25519"
    verified = olivia.ok("GET", "api/audit/verify")
    assert verified["ok"] and verified["events_checked"] >= 10


def test_pages_render_for_researchers_and_checkers(enclave):
    carol = Egress(enclave.user("carol"))
    page = carol.user.session.get(carol.base, timeout=30)
    assert page.status_code == 200 and "New request in cardio" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    olivia = Egress(enclave.user("olivia"))
    page = olivia.user.session.get(olivia.base + "audit", timeout=30)
    assert page.status_code == 200 and "The log verifies" in page.text
    # a form post without the _xsrf token is refused (CSRF)
    r = carol.user.session.post(
        carol.base + "requests", data={"project": "cardio", "title": "x"}, timeout=30
    )
    assert r.status_code == 403


def test_openapi_document_is_published(enclave):
    r = enclave.user("alice").session.get(enclave.url + "services/egress/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.") and "/api/requests/{request_id}/release" in doc["paths"]


def _next_link(response) -> str | None:
    link = response.headers.get("Link", "")
    if not link:
        return None
    assert link.endswith('>; rel="next"'), link
    return link[link.index("<") + 1 : link.index(">")]


def test_request_list_pages_and_bulk_request_changes(enclave, alice_cardio):
    alice, _container = alice_cardio
    code = "for n in 'ab': open(f'outputs/bulk_{n}.csv','w').write('group,count\\nx,20\\ny,31\\n')"
    assert alice.run_code("cardio", code)["error"] is None
    researcher = Egress(alice)
    rid = researcher.ok("POST", "api/requests", 201, json={"project": "cardio", "title": "Bulk"})[
        "id"
    ]
    for name in ("bulk_a.csv", "bulk_b.csv"):
        researcher.ok("POST", f"api/requests/{rid}/files", 201, json={"path": name})
    researcher.ok("PUT", f"api/requests/{rid}/groups/main", json={"context": "c", "controls": "k"})
    assert researcher.ok("POST", f"api/requests/{rid}/submit")["files"] == 2  # the summary
    files = researcher.ok("GET", f"api/requests/{rid}")["files"]
    for extra in range(3):  # a few more, so that pages of one have somewhere to go
        researcher.ok("POST", "api/requests", 201, json={"project": "cardio", "title": f"p{extra}"})

    # pages of one, followed through their Link headers, give the whole list once, in order
    everything = [r["id"] for r in researcher.ok("GET", "api/requests?limit=500")]
    seen, url = [], researcher.base + "api/requests?limit=1"
    while url:
        page = researcher.user.session.get(
            url if url.startswith("http") else enclave.url.rstrip("/") + url, timeout=30
        )
        assert page.status_code == 200, page.text
        seen += [r["id"] for r in page.json()]
        url = _next_link(page)
    assert seen == everything and rid in seen
    assert researcher.call("GET", "api/requests?limit=0").status_code == 400
    bad = researcher.call("GET", "api/requests?after=not-a-position")
    assert bad.status_code == 400 and "position" in bad.json()["message"]

    olivia = Egress(enclave.user("olivia"))
    olivia.ok("PUT", f"api/requests/{rid}/files/{files[0]['id']}/vote", json={"vote": "approve"})
    # bulk approval doesn't exist; the author can't vote in bulk either
    refused = olivia.call("POST", f"api/requests/{rid}/votes", json={"vote": "approve"})
    assert refused.status_code == 400 and "safe direction" in refused.json()["message"]
    assert (
        researcher.call(
            "POST", f"api/requests/{rid}/votes", json={"vote": "request_changes"}
        ).status_code
        == 403
    )
    changed = olivia.ok("POST", f"api/requests/{rid}/votes", json={"vote": "request_changes"})
    assert changed["changed"] == ["bulk_a.csv", "bulk_b.csv"]
    votes = {
        f["path"]: f["votes"]["olivia"] for f in olivia.ok("GET", f"api/requests/{rid}")["files"]
    }
    assert votes == {"bulk_a.csv": "request_changes", "bulk_b.csv": "request_changes"}
    reset = olivia.ok(
        "POST",
        f"api/requests/{rid}/votes",
        json={"vote": "undecided", "file_ids": [files[1]["id"]]},
    )
    assert reset["changed"] == ["bulk_b.csv"]
