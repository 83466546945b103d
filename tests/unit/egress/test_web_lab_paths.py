"""JupyterLab's "Add to release request" (labextension/, issue #20) in the real tornado app.

The extension opens ``projects/<project>/new?paths=...`` with the files picked in Lab's file
browser: the page lists them, offers the author's requests of the project that can still take
files (each link ticks the files in its add-files form, ``requests/<id>?paths=...``) and carries
them through "Create draft". Ticking is all it does: adding is the add-files form's, checked as
always. The browser sees it in tests/e2e/test_lab_extension_browser.py.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests

from tests.unit.egress.conftest import ACTORS
from tests.unit.egress.test_core import web_service as web_service  # the fixture

alice = ACTORS["alice"]
PICKED = ["notes.txt", "tables/smoking.csv"]


def get(base: str, path: str, user: str, **params: object) -> requests.Response:
    return requests.get(
        base + path, params=params, headers={"X-Test-User": user}, allow_redirects=False, timeout=30
    )


def ticked(html: str) -> set[str]:
    tree = html[html.index('id="outputs-tree"') : html.index('id="add-files"')]
    return set(
        re.findall(r'<input type="checkbox" name="paths" value="([^"]+)"[^>]* checked>', tree)
    )


def test_the_request_page_ticks_the_paths_it_is_given(web_service, service):
    rid = service.create_request(alice, "cardio", "From Lab")["id"]
    plain = get(web_service, f"requests/{rid}", "alice")
    assert plain.status_code == 200 and ticked(plain.text) == set()  # control: nothing ticked
    answer = get(web_service, f"requests/{rid}", "alice", paths=PICKED)
    assert answer.status_code == 200, answer.text
    assert ticked(answer.text) == set(PICKED)
    assert service.get_request(alice, rid)["files"] == []  # ticked, not added


def test_the_new_request_page_offers_open_requests_and_carries_the_paths(web_service, service):
    draft = service.create_request(alice, "cardio", "Open draft")["id"]
    other = service.create_request(ACTORS["carol"], "cardio", "Carol's draft")["id"]
    answer = get(web_service, "projects/cardio/new", "alice", paths=PICKED)
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert "Add 2 files to a release request in cardio" in html
    assert all(f"<code>{p}</code>" in html for p in PICKED)
    links = re.findall(r'<a href="([^"]+)">“([^”]+)”</a>', html)
    assert [title for _, title in links] == ["Open draft"]  # not a colleague's request
    url = urlsplit(links[0][0].replace("&amp;", "&"))
    assert url.path.endswith(f"requests/{draft}") and other not in links[0][0]
    assert parse_qs(url.query)["paths"] == PICKED
    hidden = re.findall(r'<input type="hidden" name="paths" value="([^"]+)">', html)
    assert hidden == PICKED

    created = requests.post(
        web_service + "requests",
        data=[("project", "cardio"), ("title", "New from Lab")] + [("paths", p) for p in PICKED],
        headers={"X-Test-User": "alice"},
        allow_redirects=False,
        timeout=30,
    )
    assert created.status_code == 302, created.text
    location = urlsplit(created.headers["Location"])
    assert parse_qs(location.query)["paths"] == PICKED
    landed = get(
        web_service, location.path.removeprefix("/services/egress/"), "alice", paths=PICKED
    )
    assert ticked(landed.text) == set(PICKED)


def test_without_paths_the_new_request_page_is_as_before(web_service):
    html = get(web_service, "projects/cardio/new", "alice").text
    assert 'id="picked-files"' not in html and 'name="paths"' not in html


def test_too_many_paths_are_refused_with_a_sentence(web_service):
    answer = get(
        web_service, "projects/cardio/new", "alice", paths=[f"f{i}.csv" for i in range(201)]
    )
    assert answer.status_code == 400
    assert "at most 200 paths" in answer.text
