"""Browser tests: the real enclave of tests/integration, driven through a real Chromium.

The enclave fixtures (``enclave``, ``alice_cardio``, ...) come from ``tests/enclave_fixtures.py``
(loaded for the whole run by ``tests/conftest.py``), so the browser and integration tests share
one enclave.

The browser is Debian's Chromium (``scripts/lib/browser.sh`` installs it), driven by
Playwright's Python package; ``playwright install`` is never needed. Playwright gives every
launch a fresh temporary profile (its own ``--user-data-dir``), and every user gets a browser
context of their own (separate cookies), as if on a machine of their own.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HAVRE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
#: Per step (a navigation, a click and the page it leads to, a selector to show up), in ms.
STEP_TIMEOUT_MS = 30_000
#: Where the browser tests save their screenshots: never the work tree by default (a test run
#: leaves the repository as it found it). To refresh the docs' pictures, run the browser tests
#: with ``HAVRE_SCREENSHOTS_DIR=docs/screenshots``.
SCREENSHOTS = Path(
    os.environ.get("HAVRE_SCREENSHOTS_DIR")
    or Path(tempfile.gettempdir()) / f"havre-screenshots-{os.getuid()}"
)


#: Chromium's error for a request it dropped because the host's network interfaces changed
#: (Docker adds one per container; other tests' and benchmarks' containers come and go).
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"


def wait_for_novnc_canvas(page, *, attempts: int = 4, timeout_s: float = 45.0) -> int:
    """Wait until noVNC's canvas shows on ``page`` (noVNC's page already loading); the reloads.

    noVNC loads some fifty modules; when Chromium drops one of them because the host's
    interfaces changed (``NETWORK_CHANGED``, a browser on the Docker host: never a
    researcher's), noVNC never starts. The page is then reloaded at once, as a person would,
    instead of after a timeout; a reload also follows ``timeout_s`` without a canvas. Raises
    the last wait's error after ``attempts`` loads.
    """
    import time

    dropped: list[str] = []

    def on_failed(request) -> None:
        if NETWORK_CHANGED in (request.failure or ""):
            dropped.append(request.url)

    page.on("requestfailed", on_failed)
    reloads = 0
    try:
        while True:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not dropped:
                if page.locator("canvas").is_visible():
                    return reloads
                page.wait_for_timeout(100)
            if reloads + 1 >= attempts:
                page.wait_for_selector("canvas", state="visible", timeout=1_000)
                return reloads
            dropped.clear()
            reloads += 1
            page.reload()
    finally:
        page.remove_listener("requestfailed", on_failed)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module (users get contexts of their own).

    Not for the whole session: Playwright's sync API keeps an event loop running in the main
    thread while it is open, and later tests that call ``asyncio.run`` would fail.
    """
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs Playwright: pip install -e '.[dev]'"
    )
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"needs {CHROMIUM}: source scripts/lib/browser.sh; havre_ensure_browser")
    sync_api.expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=STEP_TIMEOUT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class SignedIn:
    """A user's own browser context and page, signed in to the hub."""

    def __init__(self, browser, enclave, name: str) -> None:
        self.name = name
        self.enclave = enclave
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.context.set_default_timeout(STEP_TIMEOUT_MS)
        self.context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
        self.page = self.context.new_page()

    def url(self, path: str = "") -> str:
        return self.enclave.url.rstrip("/") + "/" + path.lstrip("/")

    def egress(self, path: str = "") -> str:
        return self.url("services/egress/" + path.lstrip("/"))

    def sign_in(self) -> SignedIn:
        """Open the enclave, go through the sign-in page of the identity provider, and back."""
        from playwright.sync_api import expect

        page = self.page
        page.goto(self.url())
        idp = self.enclave.options.idp_public_url.rstrip("/")
        if not page.url.startswith(idp):
            # the hub's own login page: one button that leads to the identity provider
            page.locator("a[href*='oauth_login']").click()
            page.wait_for_url(re.compile("^" + re.escape(idp) + "/"))
        expect(page).to_have_title("Havre sign-in", timeout=STEP_TIMEOUT_MS)
        page.fill("#username", self.name)
        page.fill("#password", self.enclave.passwords[self.name])
        with page.expect_navigation(url=re.compile("^" + re.escape(self.url("hub/")))) as nav:
            page.click("button[type=submit]")
        #: the hub's answer to the page the sign-in ended on
        self.landing = nav.value
        return self

    def close(self) -> None:
        # pages first, without their unload handlers (a page a test navigated away, or a popup
        # still loading, can otherwise keep the context's close waiting)
        for page in list(self.context.pages):
            try:
                # leave the page first (bounded): its websockets, popups and pending loads end
                # here, so the close below has nothing left to wait for
                page.goto("about:blank", timeout=10_000)
            except Exception:  # a page that won't navigate is still closed below
                pass
            try:
                page.close(run_before_unload=False)
            except Exception:  # already closed or crashed: the context close follows anyway
                pass
        self.context.close()


@pytest.fixture
def sign_in(browser, enclave) -> Iterator[object]:
    """``sign_in("alice")``: a new browser context of alice's, signed in to the hub."""
    opened: list[SignedIn] = []

    def open_as(name: str) -> SignedIn:
        user = SignedIn(browser, enclave, name)
        opened.append(user)
        return user.sign_in()

    yield open_as
    for user in opened:
        user.close()


#: axe-core's browser build, installed by scripts/lib/browser.sh (havre_ensure_axe)
AXE_JS = Path(os.environ.get("HAVRE_AXE_JS") or "/opt/havre-axe/node_modules/axe-core/axe.min.js")
#: the impacts that fail a page
SERIOUS = ("serious", "critical")


def accessibility_violations(page) -> list[dict]:
    """axe-core's WCAG 2 A/AA violations on ``page`` as it is now: ``[{id, impact, help,
    nodes}]``. The script is evaluated through the DevTools protocol, which the pages' CSP does
    not apply to, so the audit sees the page exactly as it is served."""
    if not AXE_JS.is_file():
        pytest.skip(f"needs axe-core at {AXE_JS}: source scripts/lib/browser.sh; havre_ensure_axe")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8") + "\n;undefined")
    found = page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag',
              values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}, resultTypes: ['violations']})
           .then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))"""
    )
    return list(found)
