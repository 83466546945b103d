"""Havre's JupyterLab extension (labextension/, "havre-lab") in alice's real JupyterLab.

"Add to release request" in the file browser's context menu is offered on a file of the outputs
folder and not on a file elsewhere in the home (the control, in the same page, so the
extension is loaded); it opens the egress service's page for adding files in a new tab with
that file listed, and her open request there leads to its add-files form with the file ticked.

Why JupyterLab shows no banner about her requests (issue #20 asks for one): the page may not
call the egress service at all; the hub's per-server Content-Security-Policy refuses the
connection (spawner/download_policy.py), which the test checks too, so that relaxing it is a
decision someone makes on purpose.

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


def test_add_to_release_request_from_the_file_browser(enclave, alice_cardio, sign_in, browser):
    alice_api, _container = alice_cardio
    out = alice_api.run_code(
        "cardio",
        f"import os; os.makedirs('outputs/{FOLDER}', exist_ok=True); "
        f"open('outputs/{FOLDER}/{NAME}', 'w').write({TABLE!r})",
    )
    assert out["error"] is None, out
    researcher = Egress(alice_api)
    rid = researcher.ok(
        "POST", "api/requests", 201, json={"project": "cardio", "title": "From the Lab menu"}
    )["id"]

    alice = sign_in("alice")
    page = alice.page
    started = time.monotonic()
    page.goto(alice.url(f"user/alice/cardio/lab/tree/outputs/{FOLDER}"))
    item = page.locator(".jp-DirListing-item", has_text=NAME)
    expect(item).to_be_visible(timeout=LAB_LOAD_MS)
    print(f"\nJupyterLab load to the outputs folder's listing: {time.monotonic() - started:.1f} s")

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

    # no banner: the page can't ask the egress service (its policy refuses the connection),
    # while it reaches its own server (the control)
    egress = alice.url("services/egress/api/requests")
    assert page.evaluate(FETCH_JS, egress) == "TypeError"
    assert page.evaluate(FETCH_JS, alice.url("user/alice/cardio/api/status")) == "200"
