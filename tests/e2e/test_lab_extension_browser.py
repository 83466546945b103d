"""Havre's JupyterLab extension (labextension/, "havre-lab") in alice's real JupyterLab.

"Add to release request" in the file browser's context menu is offered on a file of the outputs
folder and not on a file elsewhere in the home (the control, in the same page, so the
extension is loaded); it opens the egress service's page for adding files in a new tab with
that file listed, and her open request there leads to its add-files form with the file ticked.

The banner about her requests: JupyterLab's page may not call the egress service at all (the
hub's per-server Content-Security-Policy refuses the connection, spawner/download_policy.py,
which the test checks too, so that relaxing it is a decision someone makes on purpose). Her
request returned to her, the hub's home (its framed notices page) leaves a summary in the
browser's localStorage; her Lab then shows the banner with a link to that request. Controls in
the same Lab page, through the ``storage`` event another tab's write fires: the hub home's
summary of a user with no notices, another user's summary, a stale one: no banner; her own
again: the banner back; dismissed: gone and remembered.

One Lab page load, alice's shared server (``alice_cardio``); the API calls that make her
request go through the hub with her own session (tests/integration/test_egress_flow.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import STEP_TIMEOUT_MS
from tests.integration.test_egress_flow import Egress

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.docker

FOLDER, NAME = "lab-ext", "by_region.csv"
#: the file of her returned request (NAME stays unadded, for the add-files form)
RETURNED = "returned.csv"
TABLE = "region,cases\nBretagne,40\nOccitanie,55\nNormandie,23\n"
#: JupyterLab's first load in a fresh browser profile (its bundles, the kernel specs...)
LAB_LOAD_MS = 2 * STEP_TIMEOUT_MS
#: the extension's entry point, as JupyterLab loads it
REMOTE_ENTRY = json.loads(
    (Path(__file__).resolve().parents[2] / "labextension" / "prebuilt" / "package.json").read_text()
)["jupyterlab"]["_build"]["load"]
#: a script of the page asks the egress service; what it gets
#: (with the session cookie and the XSRF header, as JupyterLab's own calls)
FETCH_JS = """async (url) => {
    const xsrf = document.cookie.split("; ").find((c) => c.startsWith("_xsrf="));
    const headers = xsrf ? { "X-XSRFToken": decodeURIComponent(xsrf.slice(6)) } : {};
    try { return String((await fetch(url, { credentials: "same-origin", headers })).status); }
    catch (err) { return err.name; }
}"""


#: the summary the notices page left for her mentions the request
STORED_JS = """(rid) => {
    const s = JSON.parse(localStorage.getItem("havre.notices") || "null");
    return Boolean(s && s.notices.some((n) => n.id === rid));
}"""


def returned_to(researcher: Egress, rid: str, enclave) -> None:
    """Her request, with one file and its context, submitted and returned by two checkers."""
    researcher.ok("POST", f"api/requests/{rid}/files", 201, json={"path": f"{FOLDER}/{RETURNED}"})
    (group,) = {f["group"] for f in researcher.ok("GET", f"api/requests/{rid}")["files"]}
    researcher.ok(
        "PUT", f"api/requests/{rid}/groups/{group}", json={"context": "By region", "controls": "-"}
    )
    researcher.ok("POST", f"api/requests/{rid}/submit")
    for name in ("olivia", "oscar"):
        checker = Egress(enclave.user(name))
        checker.ok("POST", f"api/requests/{rid}/votes", json={"vote": "request_changes"})
        checker.ok("POST", f"api/requests/{rid}/review")
    assert checker.ok("POST", f"api/requests/{rid}/return")["state"] == "returned"


def check_banner(alice, rid: str) -> None:
    """The banner links to her returned request; what hides it (another tab's writes)."""
    page = alice.page
    banner = page.locator("#havre-release-banner")
    notice = banner.locator(f".havre-ReleaseBanner-notice[data-request='{rid}']")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("From the Lab menu")
    link = notice.locator("a")
    assert link.get_attribute("target") == "_blank"
    assert link.get_attribute("href").endswith(f"/services/egress/requests/{rid}")
    mine = page.evaluate("() => localStorage.getItem('havre.notices')")
    other = alice.context.new_page()  # another tab of the same origin writes; Lab hears it
    try:
        other.goto(alice.url("services/egress/static/notices.js"))

        def write(summary: dict) -> None:
            other.evaluate("(v) => localStorage.setItem('havre.notices', v)", json.dumps(summary))

        summary = json.loads(mine)
        none = {**summary, "notices": []}
        for control in (
            none,  # what the hub home of a user with no notices leaves
            {**summary, "user": "bob"},  # another user of this browser
            {**summary, "written_at": "2020-01-01T00:00:00+00:00"},  # stale
        ):
            write(summary)  # hers (the control): the banner shows
            expect(notice).to_be_visible()
            write(control)
            expect(banner).to_be_hidden()
        write(summary)
        expect(notice).to_be_visible()
        notice.locator("button.havre-ReleaseBanner-dismiss").click()
        # this notice goes (the banner too, unless earlier tests returned her other requests)
        expect(notice).to_be_hidden()
        gone = page.evaluate("() => JSON.parse(localStorage.getItem('havre-lab:dismissed'))")
        assert any(k.startswith(f"{rid}:returned:") for k in gone), gone  # remembered
        # the request moves again (a later change): its notice comes back
        moved = [{**n, "changed_at": "2999-01-01T00:00:00+00:00"} for n in summary["notices"]]
        write({**summary, "notices": moved})
        expect(notice).to_be_visible()
    finally:
        other.close()


def test_add_to_release_request_from_the_file_browser(enclave, alice_cardio, sign_in, browser):
    alice_api, _container = alice_cardio
    out = alice_api.run_code(
        "cardio",
        f"import os; os.makedirs('outputs/{FOLDER}', exist_ok=True); "
        f"open('outputs/{FOLDER}/{NAME}', 'w').write({TABLE!r}); "
        f"open('outputs/{FOLDER}/{RETURNED}', 'w').write({TABLE!r})",
    )
    assert out["error"] is None, out
    researcher = Egress(alice_api)
    rid = researcher.ok(
        "POST", "api/requests", 201, json={"project": "cardio", "title": "From the Lab menu"}
    )["id"]
    returned_to(researcher, rid, enclave)

    alice = sign_in("alice")
    page = alice.page
    # the hub's home: its notices frame leaves her summary in the browser's localStorage
    page.goto(alice.url("hub/home"))
    expect(page.frame_locator("#havre-notices").locator(f"#notice-{rid}")).to_be_visible()
    page.wait_for_function(STORED_JS, arg=rid)
    started = time.monotonic()
    page.goto(alice.url(f"user/alice/cardio/lab/tree/outputs/{FOLDER}"))
    item = page.locator(".jp-DirListing-item", has_text=NAME)
    expect(item).to_be_visible(timeout=LAB_LOAD_MS)
    print(f"\nJupyterLab load to the outputs folder's listing: {time.monotonic() - started:.1f} s")
    check_banner(alice, rid)

    item.click(button="right")
    entry = page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Add to release request$"))
    expect(entry).to_be_visible()
    with alice.context.expect_page() as opened:
        entry.click()
    add = opened.value
    add.wait_for_load_state()
    assert re.search(rf"/services/egress/projects/cardio/new\?paths={FOLDER}%2F{NAME}$", add.url)
    expect(add.locator("#picked-files code")).to_have_text(f"{FOLDER}/{NAME}")
    with add.expect_navigation():
        add.locator("#open-requests a", has_text="From the Lab menu").click()
    assert f"/requests/{rid}?" in add.url
    expect(add.locator(f"#outputs-tree input[value='{FOLDER}/{NAME}']")).to_be_checked()
    add.close()

    # control, same page: a file of the home outside outputs/ gets no such entry
    page.keyboard.press("Escape")
    page.locator(".jp-BreadCrumbs-home").click()
    # (the getting-started notebook: the image copies it into every new home)
    home_file = page.locator(".jp-DirListing-item", has_text="getting-started.ipynb")
    expect(home_file).to_be_visible()
    home_file.click()
    expect(home_file).to_have_class(re.compile(r"\bjp-mod-selected\b"))
    home_file.click(button="right")
    # (a command that is not offered stays in the menu, hidden)
    menu = page.locator(".lm-Menu:visible .lm-Menu-item:visible .lm-Menu-itemLabel")
    expect(menu.filter(has_text=re.compile("^Rename$"))).to_be_visible()  # the menu is open
    labels = menu.all_inner_texts()
    assert "Add to release request" not in labels, labels
    page.keyboard.press("Escape")

    # its files are served to the signed-in researcher (the control) and to nobody else
    asset = alice.url(f"user/alice/cardio/lab/extensions/havre-lab/{REMOTE_ENTRY}")
    served = alice.context.request.get(asset, max_redirects=0)
    assert served.status == 200 and b"havre-lab" in served.body()
    stranger = browser.new_context()
    try:
        refused = stranger.request.get(asset, max_redirects=0)
        assert refused.status != 200 and b"havre-lab" not in refused.body(), refused.status
    finally:
        stranger.close()

    # why localStorage: the page can't ask the egress service (its policy refuses the
    # connection), while it reaches its own server (the control)
    egress = alice.url("services/egress/api/requests")
    assert page.evaluate(FETCH_JS, egress) == "TypeError"
    assert page.evaluate(FETCH_JS, alice.url("user/alice/cardio/api/status")) == "200"
