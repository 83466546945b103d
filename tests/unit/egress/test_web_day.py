"""Issue #20's "what to build", in the real tornado app: states in words, one form per request,
adding files like Airlock.

* Every page and the API's ``state_label`` show a state in words from the one mapping of the
  pure domain (:data:`egress.domain.workflow.STATE_LABELS`), as a coloured badge;
* the context of every file group is one form with one Save: text typed in several groups is
  all kept (it was lost for every group but the saved one);
* Submit is always on the author's page; disabled, it lists what is missing;
* files are added by ticking several in a tree of the outputs folder, or a whole safe-analysis
  session (the outputs its ``results.json`` records); the sessions' own records are not listed.

The browser sees the same pages in tests/e2e/test_day_browser.py.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
import requests

from egress.domain.errors import FileRefused
from egress.domain.workflow import STATE_LABELS, RequestState, state_label
from tests.unit.egress.conftest import ACTORS
from tests.unit.egress.test_core import new_request
from tests.unit.egress.test_core import web_service as web_service  # the fixture
from tests.unit.egress.test_web_request_forms import page, post
from tests.unit.test_one_look import BRAND, SOURCE

alice = ACTORS["alice"]


def test_every_state_has_words_and_the_api_and_pages_use_them(web_service, service):
    assert set(STATE_LABELS) == set(RequestState)
    assert len(set(STATE_LABELS.values())) == len(RequestState)  # no two states look alike
    assert state_label("returned") == "Changes requested"
    assert state_label("under_review") == "Under review"

    rid = new_request(service, {"notes.txt": "main"}, submit=False)[0]
    summary = service.get_request(alice, rid)
    assert (summary["state"], summary["state_label"]) == ("draft", "Draft")
    api = requests.get(
        web_service + f"api/requests/{rid}", headers={"X-Test-User": "alice"}, timeout=30
    ).json()
    assert api["state_label"] == "Draft" and api["state_tone"] == "neutral"

    service.submit(alice, rid)
    html = page(web_service, rid, "alice")
    badge = re.search(
        r'<span class="badge tone-(\w+)" id="state" data-state="(\w+)">([^<]+)<', html
    )
    assert badge and badge.groups() == ("progress", "submitted", "Waiting for review"), badge
    listing = requests.get(web_service, headers={"X-Test-User": "alice"}, timeout=30).text
    assert 'data-state="submitted">Waiting for review<' in listing


def test_one_save_keeps_what_was_typed_in_every_group(web_service, service):
    rid = service.create_request(alice, "cardio", "Two groups")["id"]
    service.add_file(alice, rid, "notes.txt", "a")
    service.add_file(alice, rid, "tables/smoking.csv", "b")
    html = page(web_service, rid, "alice")
    assert html.count('id="save-contexts"') == 1 and "data-warn-unsaved" in html
    assert 'src="/services/egress/static/pages.js"' in html or "static/pages.js" in html

    saved = post(
        web_service,
        rid,
        "alice",
        action="contexts",
        group=["a", "b"],
        context=["What a shows", "What b shows"],
        controls=["Cells of 10", "Rounded to 5"],
    )
    assert saved.status_code == 302, saved.text
    groups = {g["name"]: g for g in service.get_request(alice, rid)["groups"]}
    assert (groups["a"]["context"], groups["a"]["controls"]) == ("What a shows", "Cells of 10")
    assert (groups["b"]["context"], groups["b"]["controls"]) == ("What b shows", "Rounded to 5")


def post_multi(base: str, rid: str, user: str, form: list[tuple[str, str]]):
    return requests.post(
        base + f"requests/{rid}/do",
        data=form,
        headers={"X-Test-User": user},
        allow_redirects=False,
        timeout=30,
    )


def test_submit_is_always_shown_and_says_what_is_missing(web_service, service):
    rid = service.create_request(alice, "cardio", "Missing bits")["id"]
    html = page(web_service, rid, "alice")
    button = re.search(r'<button type="submit" id="action-submit"[^>]*>', html).group(0)
    assert "disabled" in button
    assert "add at least one file" in html

    service.add_file(alice, rid, "notes.txt", "main")
    html = page(web_service, rid, "alice")
    assert "disabled" in re.search(r'id="action-submit"[^>]*>', html).group(0)
    assert "add at least one file" not in html
    assert re.search(r"describe group <strong>main</strong>", html)

    service.set_group_context(alice, rid, "main", "Notes", "None needed")  # control
    html = page(web_service, rid, "alice")
    assert "disabled" not in re.search(r'id="action-submit"[^>]*>', html).group(0)
    assert 'id="submit-missing"' not in html
    assert post(web_service, rid, "alice", action="submit").status_code == 302
    assert service.get_request(alice, rid)["state"] == "submitted"
    assert 'id="action-submit"' not in page(web_service, rid, "alice")  # nothing to submit


def test_several_ticked_files_are_added_at_once_and_session_records_are_hidden(
    web_service, service, outputs
):
    session = outputs / "cardio" / "session1"
    (session / "checksums").mkdir(parents=True)
    (session / "t1.csv").write_text("region,cases\nBretagne,41\nOccitanie,57\n")
    (session / "t2.csv").write_text("region,cases\nBretagne,40\nOccitanie,50\n")
    (session / "unrecorded.csv").write_text("a,b\n1,2\n")
    (session / "checksums" / "t1.csv.txt").write_text("0" * 64)
    (session / "config.json").write_text("{}")
    records = {
        "results": {
            "output_0": {"files": [{"name": "t1.csv"}]},
            "output_1": {"files": [{"name": "t2.csv"}, {"name": "t1.csv"}]},
        }
    }
    (session / "results.json").write_text(json.dumps(records))
    rid = service.create_request(alice, "cardio", "Ticked")["id"]

    html = page(web_service, rid, "alice")
    tree = html[html.index('id="outputs-tree"') : html.index('id="add-files"')]
    assert 'value="session1/t1.csv"' in tree and 'value="tables/smoking.csv"' in tree
    for hidden in ("results.json", "config.json", "checksums"):
        assert f'value="session1/{hidden}' not in tree, hidden
    assert 'name="session" value="session1"' in tree  # the folder is a session

    form = [("action", "add_files"), ("group", "tables")]
    form += [("paths", "tables/smoking.csv"), ("paths", "notes.txt")]
    assert post_multi(web_service, rid, "alice", form).status_code == 302
    files = {f["path"]: f["group"] for f in service.get_request(alice, rid)["files"]}
    assert files == {"tables/smoking.csv": "tables", "notes.txt": "tables"}

    added = post_multi(
        web_service, rid, "alice", [("action", "add_files"), ("session", "session1")]
    )
    assert added.status_code == 302, added.text
    files = {f["path"]: f["group"] for f in service.get_request(alice, rid)["files"]}
    assert files["session1/t1.csv"] == files["session1/t2.csv"] == "session1"
    assert "session1/unrecorded.csv" not in files  # only what the session recorded

    # nothing ticked: a sentence on the request's page
    refused = post_multi(web_service, rid, "alice", [("action", "add_files")])
    assert refused.status_code == 400 and "Tick at least one file" in refused.text
    # a refused file among several: which one and why, the others before it kept
    form = [("action", "add_files"), ("paths", "session1/unrecorded.csv"), ("paths", "program.zip")]
    refused = post_multi(web_service, rid, "alice", form)
    assert refused.status_code == 422 and 'id="form-refusal"' in refused.text
    assert "1 of 2 files added; program.zip was not added" in refused.text
    assert "session1/unrecorded.csv" in {
        f["path"] for f in service.get_request(alice, rid)["files"]
    }


def test_the_checkers_file_page_votes_and_moves_to_the_next_file(web_service, service):
    rid, files = new_request(service, {"notes.txt": "main", "tables/smoking.csv": "main"})
    first, second = files["notes.txt"]["id"], files["tables/smoking.csv"]["id"]
    olivia = ACTORS["olivia"]
    shown = requests.get(
        web_service + f"requests/{rid}/files/{first}", headers={"X-Test-User": "olivia"}, timeout=30
    ).text
    assert "File 1 of 2" in shown and f'files/{second}" id="next-file"' in shown
    assert 'id="viewed"' in shown and 'id="file-approve"' in shown
    assert "What main shows" in shown  # the group's context, on the file page
    assert "Researcher&#39;s library" in shown or "Researcher's library" in shown

    voted = post(
        web_service,
        rid,
        "olivia",
        action="vote",
        file_id=str(first),
        vote="approve",
        then=f"files/{second}",
    )
    assert voted.status_code == 302 and voted.headers["Location"].endswith(f"files/{second}")
    assert service.get_request(olivia, rid)["files"][0]["votes"] == {"olivia": "approve"}
    # anywhere else than a file page of this request: back to the request
    other = post(
        web_service,
        rid,
        "olivia",
        action="vote",
        file_id=str(second),
        vote="approve",
        then="//evil.example/x",
    )
    assert other.status_code == 302 and other.headers["Location"].endswith(f"requests/{rid}")

    # the author sees no vote buttons on her preview
    html = requests.get(
        web_service + f"requests/{rid}/files/{first}", headers={"X-Test-User": "alice"}, timeout=30
    ).text
    assert 'id="file-approve"' not in html


def test_a_release_downloads_as_one_archive_with_its_folders_and_signed_record(
    web_service, service, outputs
):
    import hashlib
    import io
    import zipfile

    olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]
    rid, files = new_request(service, {"notes.txt": "main", "tables/smoking.csv": "main"})

    def fetch(user: str) -> requests.Response:
        return requests.get(
            web_service + f"requests/{rid}/release.zip", headers={"X-Test-User": user}, timeout=30
        )

    refused = fetch("alice")  # not released yet: a sentence, no archive
    assert refused.status_code == 409 and "released" in refused.text
    for checker in (olivia, oscar):
        for entry in files.values():
            service.vote(checker, rid, entry["id"], "approve")
        service.submit_review(checker, rid)
    service.approve(oscar, rid)
    service.release(oscar, rid)
    assert 'id="download-all"' in page(web_service, rid, "alice")

    answer = fetch("alice")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = set(archive.namelist())
    assert names == {"notes.txt", "tables/smoking.csv", "havre-release-record.json"}
    record = json.loads(archive.read("havre-release-record.json"))
    assert record == service.release_record(alice, rid)
    released = {f["path"]: f["sha256"] for f in record["record"]["files"]}
    for path in ("notes.txt", "tables/smoking.csv"):  # byte for byte what was released
        assert hashlib.sha256(archive.read(path)).hexdigest() == released[path]
        assert archive.read(path) == (outputs / "cardio" / path).read_bytes()
    assert fetch("bob").status_code in (403, 404)  # not a member of cardio


NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"widgets": {"state": {}}, "kernelspec": {"name": "python3"}},
    "cells": [
        {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# Counts"},
        {
            "cell_type": "code",
            "id": "c1",
            "metadata": {},
            "execution_count": 3,
            "source": "print(df.groupby('region').size())",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "Bretagne 7\n"}],
        },
    ],
}


def test_a_notebook_released_as_code_is_the_stripped_bytes_the_checkers_approved(
    web_service, service, outputs
):
    import hashlib

    olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]
    (outputs / "cardio" / "analysis.ipynb").write_text(json.dumps(NOTEBOOK))
    rid = service.create_request(alice, "cardio", "Code")["id"]
    form = [("action", "add_files"), ("paths", "analysis.ipynb"), ("as_code", "1")]
    assert post_multi(web_service, rid, "alice", form).status_code == 302
    assert "outputs stripped" in page(web_service, rid, "alice")
    entry = service.get_request(alice, rid)["files"][0]
    service.set_group_context(alice, rid, "main", "The analysis code", "No outputs")
    service.submit(alice, rid)

    seen = service.view_file(olivia, rid, entry["id"])  # what the checker is shown
    stripped = json.loads(seen.data)
    code = stripped["cells"][1]
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["source"] == NOTEBOOK["cells"][1]["source"]  # the code is all there
    assert "Bretagne 7" not in seen.data.decode() and "widgets" not in stripped["metadata"]
    for checker in (olivia, oscar):
        service.vote(checker, rid, entry["id"], "approve")
        service.submit_review(checker, rid)
    service.approve(oscar, rid)
    record = service.release(oscar, rid)["record"]
    released = service.download_released(alice, rid, entry["id"]).data
    approved = hashlib.sha256(seen.data).hexdigest()
    assert hashlib.sha256(released).hexdigest() == approved == seen.sha256
    assert [f["sha256"] for f in record["files"]] == [approved]

    # control: the same notebook added without "as code" keeps its outputs
    rid2 = service.create_request(alice, "cardio", "With outputs")["id"]
    service.add_file(alice, rid2, "analysis.ipynb", "main")
    service.set_group_context(alice, rid2, "main", "x", "y")
    service.submit(alice, rid2)
    kept = service.view_file(olivia, rid2, service.get_request(alice, rid2)["files"][0]["id"])
    assert "Bretagne 7" in kept.data.decode()
    # a text file can't be released "as code": a sentence, nothing added
    rid3 = service.create_request(alice, "cardio", "Not code")["id"]
    with pytest.raises(FileRefused, match="only a notebook"):
        service.add_file(alice, rid3, "notes.txt", as_code=True)
    assert service.get_request(alice, rid3)["files"] == []


def test_the_notices_page_tells_authors_and_checkers_what_needs_them(web_service, service):
    olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]
    rid, files = new_request(service, {"notes.txt": "main"}, title="Rates by region")

    def notices(user: str) -> requests.Response:
        return requests.get(web_service + "notices", headers={"X-Test-User": user}, timeout=30)

    queue = notices("olivia").text
    assert re.search(r'id="notice-queue">\s*\d+ release requests? needs? you', queue)
    assert f"notice-{rid}" not in notices("alice").text  # submitted: nothing for her to do
    assert 'id="notice-queue"' not in notices("alice").text  # not a checker
    for checker in (olivia, oscar):
        service.vote(checker, rid, files["notes.txt"]["id"], "request_changes")
        service.submit_review(checker, rid)
    service.return_request(oscar, rid)
    answer = notices("alice")
    assert f'id="notice-{rid}"' in answer.text and "Changes requested" in answer.text
    assert "Rates by region" in answer.text and 'target="_top"' in answer.text
    # only this page may be framed, and only by the same origin
    assert "frame-ancestors 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    other = requests.get(web_service, headers={"X-Test-User": "alice"}, timeout=30)
    assert "frame-ancestors 'none'" in other.headers["Content-Security-Policy"]
    assert other.headers["X-Frame-Options"] == "DENY"
    assert f"notice-{rid}" not in notices("carol").text  # a colleague is not told


def test_the_file_page_marks_failing_and_suppressed_cells_with_words_and_a_legend(
    web_service, service, outputs
):
    """The checker's table: a failing count and a blank (suppressed) cell are coloured, carry a
    word (never colour alone) and the reason as a title; the legend counts them."""
    (outputs / "cardio" / "marked.csv").write_text(
        "region,female,male\nBretagne,41,3\nOccitanie,,57\nNormandie,12,13\n"
    )
    rid, files = new_request(service, {"marked.csv": "main", "notes.txt": "main"})
    html = requests.get(
        web_service + f"requests/{rid}/files/{files['marked.csv']['id']}",
        headers={"X-Test-User": "olivia"},
        timeout=30,
    ).text
    cells = re.findall(r'<td class="havre-cell ([^"]+)" title="([^"]+)">([^<]*)<span', html)
    assert [(c, t.split(":")[0], v.strip()) for c, t, v in cells] == [
        ("havre-cell-fail", "fail", "3"),
        ("havre-cell-suppressed", "suppressed", ""),
    ], cells
    assert "below the threshold" in cells[0][1]
    assert html.count('<span class="havre-mark">fails</span>') == 2  # the cell and the legend
    assert html.count('<span class="havre-mark">suppressed</span>') == 2
    legend = re.search(r'<div class="havre-legend" id="cell-legend">.*?</div>', html).group(0)
    assert "1 cell" in legend and "to review" not in legend
    assert (
        ".havre-cell-fail,"
        in (web_service_css := requests.get(web_service + "static/havre.css", timeout=30).text)
        and ".havre-cell-suppressed," in web_service_css
    )

    # control: a table every rule passes has no mark and no legend
    clean = requests.get(
        web_service + f"requests/{rid}/files/{files['notes.txt']['id']}",
        headers={"X-Test-User": "olivia"},
        timeout=30,
    ).text
    assert "havre-mark" not in clean and "cell-legend" not in clean


def test_the_egress_pages_and_refusals_share_the_header(web_service):
    """Issue #20's one look on the egress side (the hub's and sign-in pages:
    tests/unit/test_one_look.py)."""
    served = requests.get(web_service + "static/havre.css", timeout=30).text
    assert served == SOURCE
    home = requests.get(web_service, headers={"X-Test-User": "alice"}, timeout=30).text
    refusal = requests.get(
        web_service + "requests/nosuchrequest", headers={"X-Test-User": "alice"}, timeout=30
    )
    assert refusal.status_code == 404
    for html in (home, refusal.text):
        assert BRAND.search(html), html[:1500]
        header = re.search(r'<header role="banner">.*?</header>', html, re.S).group(0)
        assert 'id="nav-projects"' in header and 'id="nav-release-requests"' in header
        assert "output checking" not in header.lower()


def test_the_notices_page_hands_jupyterlab_its_summary_in_a_script_block(web_service, service):
    """JupyterLab's banner reads what this page leaves in localStorage (labextension/): the JSON
    block carries her returned request, the title (her own text) can't close the block."""
    olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]
    title = "Rates </script><script>alert(\"x\")</script> & 'quoted' <!--"
    rid, files = new_request(service, {"notes.txt": "main"}, title=title)
    for checker in (olivia, oscar):
        service.vote(checker, rid, files["notes.txt"]["id"], "request_changes")
        service.submit_review(checker, rid)
    service.return_request(oscar, rid)

    def block(user: str) -> tuple[str, dict]:
        page = requests.get(web_service + "notices", headers={"X-Test-User": user}, timeout=30)
        found = re.search(
            r'<script type="application/json" id="lab-notices">(.*?)</script>', page.text, re.S
        )
        assert found, page.text
        return page.text, json.loads(found.group(1))

    html, summary = block("alice")
    # the title's markup stays inside the block: only the page's own two scripts end there
    assert html.count("</script>") == 2 and "<!--" not in html
    assert '<script src="' in html and html.count("<script") == 2
    assert summary["key"] == "havre.notices" and summary["user"] == "alice"
    assert datetime.fromisoformat(summary["written_at"]).tzinfo is not None  # compared in Lab
    (notice,) = [n for n in summary["notices"] if n["id"] == rid]
    assert notice["title"] == title  # the same text after JSON.parse
    assert (notice["state"], notice["state_label"]) == ("returned", "Changes requested")
    assert notice["url"].endswith(f"/requests/{rid}") and notice["changed_at"]
    # a colleague's summary is hers, without alice's request
    _, carol = block("carol")
    assert carol["user"] == "carol" and rid not in [n["id"] for n in carol["notices"]]
    # the page's script is served, under the page policy that lets it run (no inline script)
    script = requests.get(web_service + "static/notices.js", timeout=30)
    assert script.status_code == 200 and "localStorage.setItem" in script.text
