"""The release story in a real browser: a researcher asks, two checkers review, she downloads.

Every step a person takes is a click or a keystroke in Chromium, each user in a browser context
of their own: sign-in on the identity provider's page, the egress service's pages and forms
(posted back with the service's XSRF token, answered by a redirect), the file view of a table
with its automatic disclosure check, the download of the released file, and the audit log.
Only writing the table in the notebook goes through the hub API (the notebook UI is tested
elsewhere). Screenshots of three key pages go to $HAVRE_SCREENSHOTS_DIR (docs/screenshots/
to refresh the docs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import SCREENSHOTS, STEP_TIMEOUT_MS

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.docker

FILE = "cases_by_region.csv"
TABLE = "region,cases\nBretagne,41\nOccitanie,57\nNormandie,24\nGrand Est,33\n"
#: the audit events of one request's life, in the order they happen
STORY_EVENTS = [
    "REQUEST_CREATED",
    "FILE_ADDED",
    "CONTEXT_EDITED",
    "SUBMITTED",
    "FILE_VIEWED",
    "VOTED",
    "REVIEW_SUBMITTED",
    "VOTED",
    "REVIEW_SUBMITTED",
    "APPROVED",
    "RELEASED",
    "DOWNLOADED",
]


def post_form(page, selector: str) -> None:
    """Click a form's button and wait for the page the post-and-redirect leads to."""
    with page.expect_navigation(wait_until="load"):
        page.click(selector)


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name))


def votes_text(page) -> str:
    """The text of the votes column of the files table (column 6)."""
    return " ".join(page.locator("#files tbody tr td:nth-child(6)").all_inner_texts())


def open_from_queue(page, user, request_id: str, state: str) -> None:
    page.goto(user.egress())
    queue = page.locator("section.box", has=page.get_by_role("heading", name="To review"))
    link = queue.get_by_role("link", name=request_id, exact=True)
    expect(link).to_be_visible()
    with page.expect_navigation():
        link.click()
    expect(page.locator("#state")).to_have_attribute("data-state", state)


def review(page, file_id: int) -> None:
    """Approve the file and submit the review."""
    post_form(page, f"#approve-{file_id}")
    post_form(page, "#action-review")


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(any(event == item for item in remaining) for event in wanted)


def test_release_story_in_the_browser(enclave, alice_cardio, sign_in):
    alice_api, _container = alice_cardio
    out = alice_api.run_code("cardio", f"open('outputs/{FILE}', 'w').write({TABLE!r})")
    assert out["error"] is None, out

    # 1. alice signs in through the identity provider's page and lands on the hub
    alice = sign_in("alice")
    page = alice.page
    assert page.url.startswith(alice.url("hub/"))

    # 2. alice asks for the release of her table
    page.goto(alice.egress())
    expect(page.locator("header .who")).to_have_text("alice")
    with page.expect_navigation():
        page.get_by_role("button", name="New request in cardio").click()
    page.fill("#title", "Cases by region, browser test")
    with page.expect_navigation(url=re.compile(r"/services/egress/requests/[A-Za-z0-9_-]+$")):
        page.get_by_role("button", name="Create draft").click()
    request_id = page.url.rsplit("/", 1)[1]
    request_url = page.url
    expect(page.locator("#state")).to_have_attribute("data-state", "draft")

    page.select_option("#path", FILE)
    post_form(page, "#add-file")
    file_link = page.locator("#files").get_by_role("link", name=FILE, exact=True)
    expect(file_link).to_be_visible()
    file_id = int(file_link.get_attribute("href").rsplit("/", 1)[1])
    expect(page.locator("#files")).to_contain_text("SDC: review")  # hand-written: no library record

    context_form = page.locator("#contexts fieldset[data-group=main]")
    context_form.locator("textarea[name=context]").fill("Hospital stays by region, 2025")
    context_form.locator("textarea[name=controls]").fill("Every cell counts at least 10 people")
    with page.expect_navigation():
        page.click("#save-contexts")
    expect(context_form.locator("textarea[name=context]")).to_have_value(
        "Hospital stays by region, 2025"
    )

    post_form(page, "#action-submit")
    expect(page.locator("#state")).to_have_attribute("data-state", "submitted")
    # 5a. the author is no reviewer of her own request: no vote or review buttons for her
    expect(page.locator(f"#approve-{file_id}")).to_have_count(0)
    expect(page.locator(f"#changes-{file_id}")).to_have_count(0)
    expect(page.locator("#action-review")).to_have_count(0)
    screenshot(page, "researcher-request-submitted.png")

    # 3. olivia reviews: the queue, the file shown as a table with its check, her vote
    olivia = sign_in("olivia")
    checker = olivia.page
    open_from_queue(checker, olivia, request_id, "submitted")
    assert "olivia:" not in votes_text(checker) and "oscar:" not in votes_text(checker)
    with checker.expect_navigation():
        checker.locator("#files").get_by_role("link", name=FILE, exact=True).click()
    expect(checker.locator(".sdc-badge .badge")).to_have_text("SDC: review")
    table = checker.locator(".file-view table")
    expect(table).to_be_visible()
    shown = [text.strip() for text in table.locator("th, td").all_inner_texts()]
    for cell in ("region", "cases", "Bretagne", "41", "Grand Est", "33"):
        assert cell in shown, shown
    screenshot(checker, "checker-file-view.png")
    with checker.expect_navigation():
        checker.get_by_role("link", name=f"← request {request_id}").click()
    review(checker, file_id)
    expect(checker.locator("#state")).to_have_attribute("data-state", "under_review")
    expect(checker.locator("#files")).to_contain_text("olivia: approve")

    # 5b. independent reviews: oscar does not see olivia's vote before his review is in
    oscar = sign_in("oscar")
    checker2 = oscar.page
    open_from_queue(checker2, oscar, request_id, "under_review")
    assert "olivia:" not in votes_text(checker2)
    expect(checker2.locator("#action-approve")).to_have_count(0)
    post_form(checker2, f"#approve-{file_id}")
    assert "olivia:" not in votes_text(checker2)
    expect(checker2.locator("#files")).to_contain_text("oscar: approve")
    post_form(checker2, "#action-review")
    expect(checker2.locator("#state")).to_have_attribute("data-state", "reviewed")
    post_form(checker2, "#action-approve")
    expect(checker2.locator("#state")).to_have_attribute("data-state", "approved")
    post_form(checker2, "#action-release")
    expect(checker2.locator("#state")).to_have_attribute("data-state", "released")
    screenshot(checker2, "checker-request-released.png")

    # 4. alice downloads exactly the bytes she wrote
    page.goto(request_url)
    expect(page.locator("#state")).to_have_attribute("data-state", "released")
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download_info:
        page.click(f"#download-{file_id}")
    download = download_info.value
    assert download.failure() is None
    assert download.suggested_filename == FILE
    assert Path(download.path()).read_bytes() == TABLE.encode()

    # 6. the audit log verifies and tells the request's story, step by step
    checker.goto(olivia.egress("audit"))
    expect(checker.locator("#audit-ok")).to_contain_text("The log verifies")
    checker.fill("#request", request_id)
    with checker.expect_navigation():
        checker.get_by_role("button", name="Show").click()
    expect(checker.locator("#audit-ok")).to_contain_text("The log verifies")
    rows = checker.locator("table tbody tr")
    expect(rows.first).to_be_visible()
    events = [
        (cells[2], cells[3])
        for cells in (
            [td.strip() for td in row.locator("td").all_inner_texts()] for row in rows.all()
        )
    ]
    story = [event for _actor, event in events if event in STORY_EVENTS]
    assert is_subsequence(STORY_EVENTS, story), events
    actors = {event: set() for _actor, event in events}
    for actor, event in events:
        actors[event].add(actor)
    assert actors["SUBMITTED"] == {"alice"}
    assert actors["VOTED"] == {"olivia", "oscar"}
    assert actors["REVIEW_SUBMITTED"] == {"olivia", "oscar"}
    assert actors["RELEASED"] == {"oscar"}
    assert actors["DOWNLOADED"] == {"alice"}


def test_an_author_who_checks_outputs_cannot_review_her_own_request(enclave, sign_in):
    """chloe is a cardio researcher and an output checker: her own request is never in her
    queue, and its page offers her no vote or review; another checker's page does."""
    name = "chloe_counts.csv"
    (enclave.config.outputs_dir("cardio") / name).write_text(TABLE)
    chloe = sign_in("chloe")
    page = chloe.page
    page.goto(chloe.egress())
    with page.expect_navigation():
        page.get_by_role("button", name="New request in cardio").click()
    page.fill("#title", "Checked by someone else")
    with page.expect_navigation(url=re.compile(r"/services/egress/requests/[A-Za-z0-9_-]+$")):
        page.get_by_role("button", name="Create draft").click()
    request_id = page.url.rsplit("/", 1)[1]
    page.select_option("#path", name)
    post_form(page, "#add-file")
    file_id = int(
        page.locator("#files")
        .get_by_role("link", name=name, exact=True)
        .get_attribute("href")
        .rsplit("/", 1)[1]
    )
    context_form = page.locator("#contexts fieldset").first
    context_form.locator("textarea[name=context]").fill("Stays by region")
    context_form.locator("textarea[name=controls]").fill("Cells of 10 or more")
    with page.expect_navigation():
        page.click("#save-contexts")
    post_form(page, "#action-submit")
    expect(page.locator("#state")).to_have_attribute("data-state", "submitted")
    for control in (f"#approve-{file_id}", f"#changes-{file_id}", "#action-review"):
        expect(page.locator(control)).to_have_count(0)
    expect(page.locator("#request-changes-all")).to_have_count(0)
    page.goto(chloe.egress())
    queue = page.locator("section.box", has=page.get_by_role("heading", name="To review"))
    expect(queue).to_be_visible()  # she is a checker: she has a queue...
    expect(queue.get_by_role("link", name=request_id, exact=True)).to_have_count(0)  # ...not it

    oscar = sign_in("oscar")  # control: another checker is offered the review
    open_from_queue(oscar.page, oscar, request_id, "submitted")
    expect(oscar.page.locator(f"#approve-{file_id}")).to_be_visible()


def test_sign_in_lands_on_a_working_hub_page(enclave, sign_in):
    """Opening the enclave goes straight to the provider's page, then to the hub's home."""
    user = sign_in("carol")
    assert user.landing.status < 400, (user.page.url, user.landing.status)
    assert user.page.url.endswith("/hub/home"), user.page.url
    expect(user.page.get_by_text("Bad Request")).to_have_count(0)
