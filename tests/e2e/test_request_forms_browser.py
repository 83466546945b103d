"""The request page's dead ends of issue #20, in Chromium against the real enclave.

* The file list of the add-file form starts on the researcher's newest own file (it started on
  whatever came first, often a colleague's);
* adding a file the checks refuse (``results.json``, a safe-analysis session's metadata) shows
  the request's own page with the sentence on it, not a bare 422 page linking to the list;
* Withdraw asks for a confirmation (a page of its own) and is styled as dangerous; cancelling
  changes nothing. (Reject uses the same confirmation: tests/unit/egress/
  test_web_request_forms.py.)
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_release_story_browser import post_form

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.docker

OWN = "zz_alice_rates.csv"
#: first in the list, written by someone else (here: the host, no server's uid)
OTHER = "aa_someone_elses.csv"
TABLE = "region,cases\nBretagne,41\nOccitanie,57\n"


def test_adding_files_starts_on_your_own_and_explains_a_refusal_in_place(
    enclave, alice_cardio, sign_in
):
    alice_api, _container = alice_cardio
    out = alice_api.run_code(
        "cardio", "open('outputs/results.json', 'w').write('{\"session\": \"metadata\"}')"
    )
    assert out["error"] is None, out
    out = alice_api.run_code(  # her newest file
        "cardio", f"import time; time.sleep(0.05); open('outputs/{OWN}', 'w').write({TABLE!r})"
    )
    assert out["error"] is None, out
    (enclave.config.outputs_dir("cardio") / OTHER).write_text(TABLE)

    alice = sign_in("alice")
    page = alice.page
    page.goto(alice.egress())
    with page.expect_navigation():
        page.get_by_role("button", name="New request in cardio").click()
    page.fill("#title", "Dead ends")
    with page.expect_navigation(url=re.compile(r"/services/egress/requests/[A-Za-z0-9_-]+$")):
        page.get_by_role("button", name="Create draft").click()
    request_url = page.url

    # the list holds the other file first, and starts on her own newest file
    values = page.locator("#path option").evaluate_all("options => options.map(o => o.value)")
    assert values.index(OTHER) < values.index(OWN), values
    expect(page.locator("#path")).to_have_value(OWN)
    expect(page.locator("#path option", has_text=OWN)).to_contain_text("yours")

    # a refused file: the sentence on the request's own page, the choice kept
    page.select_option("#path", "results.json")
    page.fill("#group", "session")
    post_form(page, "#add-file")
    refusal = page.locator("#form-refusal")
    expect(refusal).to_be_visible()
    sentence = refusal.inner_text().strip()
    assert len(sentence.split()) >= 4, sentence
    expect(page.locator("#state")).to_have_attribute("data-state", "draft")
    expect(page.get_by_role("heading", name="Dead ends")).to_be_visible()
    expect(page.locator("#path")).to_have_value("results.json")
    expect(page.locator("#group")).to_have_value("session")
    expect(page.locator("#files")).to_have_count(0)
    print(f"\nresults.json refused on the request page: {sentence}")

    # control: her own table is added from the same page
    page.select_option("#path", OWN)
    page.fill("#group", "main")
    post_form(page, "#add-file")
    assert page.url == request_url
    expect(page.locator("#files").get_by_role("link", name=OWN, exact=True)).to_be_visible()

    # Withdraw: styled as dangerous, and a confirmation first
    withdraw = page.locator("#action-withdraw")
    expect(withdraw).to_have_class(re.compile(r"\bdanger\b"))
    post_form(page, "#action-withdraw")
    expect(page.get_by_role("heading", name="Withdraw this request?")).to_be_visible()
    with page.expect_navigation():
        page.locator("#confirm-cancel").click()
    expect(page.locator("#state")).to_have_attribute(
        "data-state", "draft"
    )  # cancelled: nothing happened
    post_form(page, "#action-withdraw")
    post_form(page, "#confirm-yes")
    expect(page.locator("#state")).to_have_attribute("data-state", "withdrawn")
