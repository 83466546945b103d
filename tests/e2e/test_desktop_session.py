"""A pixels-only project end to end, in the real enclave (issue #17).

dora is the demo's researcher of ``renal`` (``access: desktop``). Her server starts through the
hub and the broker as a pair (the notebook server and its remote desktop); her Chromium signs
in through the hub and the identity provider, and the project's URL gives her noVNC, whose
canvas shows JupyterLab running in the desktop's Chromium. One session is shared by the module
(one sign-in, one server pair).

* keystrokes sent through the canvas open a console and run code that reads ``/data``: the
  file the typed code writes in her home holds the data file's line count (read back with
  ``docker exec``), and the output is on the canvas (screenshot ``desktop-lab.png``);
* ``renal`` allows text pasted in (the demo's ``desktop_paste: inbound-text``): code put in
  the page's "Paste text into the desktop" box and pasted with Ctrl+V through the canvas runs
  (its file in her home), and the desktop container's log has its ``desktop.paste`` line
  (SHA-256 and length, not the text); noVNC's own clipboard panel is not shown. (The refusal
  where a project allows none, and Xvnc's clipboard then: tests/integration/
  test_desktop_hardening.py; the relay's parser: tests/unit/test_desktop_paste_relay.py.)
* a kernel of the project can't drive the desktop: websockify, on the loopback the kernel
  shares, gives VNC only to a websocket with the token the desktop's front adds (control:
  the same handshake with the token, read from the desktop's own files, gets VNC's greeting);
* from outside, none of JupyterLab's routes of the desktop project is routable: each gets the
  guard's pixels-only refusal, while the same request on alice's browser-tier server answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import websocket

from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from tests.e2e.conftest import SignedIn, wait_for_novnc_canvas
from tests.integration import probes
from tests.integration.canaries import (
    PROBE,
    canary_on_a_bridge,
    host_address,
    host_resolver_on_loopback,
    link_local_address,
    new_token,
    parse_probe,
    tcp_canary,
    udp_canary,
)

#: the desktop's screen is 1280x800 (images/desktop); the page leaves room around noVNC's canvas
DESKTOP_VIEWPORT = {"width": 1400, "height": 900}
#: JupyterLab's Launcher on the desktop's screen: the "Python 3" tile under "Console"
CONSOLE_TILE = (452, 393)
#: JupyterLab's orange (its logo and the Launcher's notebook icon), to see that Lab is drawn
LAB_ORANGE = (243, 118, 38)
DEADLINE = 120.0
LOAD_ATTEMPTS = 4
CLICK_ATTEMPTS = 6
SCREENSHOTS = Path(
    os.environ.get("HAVRE_SCREENSHOTS_DIR")
    or Path(tempfile.gettempdir()) / f"havre-screenshots-{os.getuid()}"
)
TYPED_FILE = "desktop-typed.txt"
#: what dora types through the canvas: it reads /data and leaves its answer in her home
TYPED_CODE = (
    "n = sum(1 for _ in open('/data/hospital_stays.csv')); "
    f"open('{TYPED_FILE}', 'w').write(str(n)); print('rows read through pixels:', n)"
)

#: a websocket handshake to websockify on the loopback the kernel shares with the desktop;
#: prints "RFB" when VNC's greeting comes back
WEBSOCKIFY_PROBE = r"""
import base64, os, socket, sys
s = socket.create_connection(("127.0.0.1", 6081), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {sys.argv[1]} HTTP/1.1\r\nHost: 127.0.0.1:6081\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: binary\r\n\r\n").encode())
data = b""
try:
    while b"RFB " not in data and len(data) < 65536:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
first = data.split(b"\r\n", 1)[0].decode("latin-1")
print("RFB" if b"RFB " in data else f"no VNC ({first or 'closed'})")
"""


@dataclass
class DesktopSession:
    hub: object  # HubUser: dora's hub session (requests)
    user: SignedIn  # dora's Chromium, on the project's noVNC page
    notebook: object  # the notebook container
    desktop: object  # the desktop container

    def canvas_share(self, colour: tuple[int, int, int]) -> float:
        """The share of the canvas's pixels near ``colour`` (read in the page)."""
        return self.user.page.evaluate(
            """([r, g, b]) => {
                const c = document.querySelector("canvas");
                if (!c || !c.width) return 0;
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let near = 0;
                for (let i = 0; i < d.length; i += 4) {
                    if (Math.abs(d[i] - r) <= 12 && Math.abs(d[i + 1] - g) <= 12
                        && Math.abs(d[i + 2] - b) <= 12) near++;
                }
                return near / (d.length / 4);
            }""",
            list(colour),
        )


def _wait_for(what: str, check, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {deadline:.0f} s (last: {last!r})")


def _exec(container, command: list[str]) -> str:
    code, output = container.exec_run(command)
    return output.decode(errors="replace").strip()


@pytest.fixture(scope="module")
def dora_pair(enclave) -> Iterator[tuple[object, object, object]]:
    """dora's ``renal`` server pair, started through the hub's API: (her hub session, the
    notebook container, the desktop container); stopped at the end of the module."""
    dora = enclave.user("dora")
    r = dora.start_server("renal")
    assert r.status_code in (201, 202), r.text
    try:
        dora.wait_ready("renal")
        notebook = enclave.docker.containers.get(enclave.config.container_name("renal", "dora"))
        desktop = enclave.docker.containers.get(
            enclave.config.desktop_container_name("renal", "dora")
        )
        yield dora, notebook, desktop
    finally:
        dora.stop_server("renal")


@pytest.fixture(scope="module")
def desktop_session(dora_pair, enclave, browser):
    dora, notebook, desktop = dora_pair
    user = SignedIn(browser, enclave, "dora")
    user.page.set_viewport_size(DESKTOP_VIEWPORT)
    try:
        user.sign_in()
        user.page.goto(user.url("user/dora/renal/"))  # the hub's OAuth, then noVNC
        assert "/user/dora/renal/desktop/vnc.html" in user.page.url, user.page.url
        # noVNC loads some fifty modules, each after the front's sign-in check; a module
        # Chromium drops as the host's interfaces change is reloaded at once
        wait_for_novnc_canvas(user.page, attempts=LOAD_ATTEMPTS)
        yield DesktopSession(dora, user, notebook, desktop)
    finally:
        user.close()


def test_the_canvas_shows_jupyterlab_and_typed_keys_run_code_that_reads_data(desktop_session):
    s = desktop_session
    page = s.user.page
    # JupyterLab, drawn in the desktop's Chromium, arrives as pixels: its orange is on the canvas
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:  # (a few hundred pixels: the logo and the Launcher's notebook icon)
        _wait_for("JupyterLab on the canvas", lambda: s.canvas_share(LAB_ORANGE) > 0.0001)
    finally:
        page.screenshot(path=str(SCREENSHOTS / "desktop-first.png"))

    box = page.locator("canvas").bounding_box()
    assert box is not None and box["width"] >= 1280, box
    # the console's kernel has started (asked inside the server, with its own token)
    sessions = (
        "import json, os, urllib.request as u; "
        "r = u.Request('http://127.0.0.1:8888' + os.environ['JUPYTERHUB_SERVICE_PREFIX'] + "
        "'api/sessions', headers={'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']});"
        "print(sum(x['kernel']['execution_state'] == 'idle' for x in json.load(u.urlopen(r))))"
    )
    python = "/opt/havre/venv/bin/python"
    # (JupyterLab's splash screen may still cover the Launcher: click again, a bounded number
    # of times, until a console's kernel runs)
    for attempt in range(CLICK_ATTEMPTS):
        page.mouse.click(box["x"] + CONSOLE_TILE[0], box["y"] + CONSOLE_TILE[1])
        try:
            _wait_for(
                "a console kernel",
                lambda: _exec(s.notebook, [python, "-c", sessions]) not in ("", "0"),
                deadline=20,
            )
            break
        except AssertionError:
            if attempt == CLICK_ATTEMPTS - 1:
                raise
    page.keyboard.type(TYPED_CODE, delay=15)
    page.keyboard.press("Shift+Enter")

    rows = _exec(s.notebook, ["sh", "-c", "wc -l < /data/hospital_stays.csv"])
    typed = _wait_for(
        "the typed code's file in dora's home",
        lambda: _exec(s.notebook, ["sh", "-c", f"cat ~/{TYPED_FILE} 2>/dev/null"]),
    )
    assert typed == rows and int(rows) > 1000, (typed, rows)
    page.screenshot(path=str(SCREENSHOTS / "desktop-lab.png"))


def test_copying_inside_the_desktop_puts_nothing_on_the_researchers_clipboard(desktop_session):
    s = desktop_session
    page = s.user.page
    origin = s.user.url("").rstrip("/")
    s.user.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    # control: the researcher's clipboard works from this page
    page.evaluate("navigator.clipboard.writeText('control-7f3a')")  # (Playwright awaits it)
    assert page.evaluate("navigator.clipboard.readText()") == "control-7f3a"
    # inside the desktop: code typed into the console's prompt (focused after the run of the
    # test above), selected and copied in the desktop's Chromium, then pasted after itself
    # and run: the file it writes twice shows the desktop's own clipboard held the copy
    copied = "open('clip.txt', 'a').write('x')"
    page.keyboard.type(copied, delay=15)
    page.keyboard.press("Control+a")
    page.keyboard.press("Control+c")
    page.keyboard.press("End")
    page.keyboard.type(";", delay=15)
    page.keyboard.press("Control+v")
    page.keyboard.press("Shift+Enter")
    _wait_for(
        "the code copied and pasted inside the desktop",
        lambda: _exec(s.notebook, ["sh", "-c", "cat ~/clip.txt 2>/dev/null"]) == "xx",
    )
    # neither the researcher's clipboard nor noVNC's clipboard panel got the copy
    clipboard = page.evaluate("navigator.clipboard.readText()")
    panel = page.evaluate("(document.getElementById('noVNC_clipboard_text') || {value: ''}).value")
    assert clipboard == "control-7f3a" and "clip.txt" not in panel, (clipboard, panel)


PASTED_FILE = "desktop-pasted.txt"


def test_text_pasted_through_the_pages_box_runs_in_the_desktop_and_is_audited(desktop_session):
    s = desktop_session
    page = s.user.page
    marker = "pasted-" + secrets.token_hex(8)
    code = f"open('{PASTED_FILE}', 'w').write('{marker}')"
    # the page's own box (renal allows inbound text); noVNC's clipboard panel is hidden
    assert not page.locator("#noVNC_clipboard_button").is_visible()
    page.locator("#havre_paste summary").click()
    page.locator("#havre_paste_text").fill(code)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "researcher-desktop-paste.png"))
    page.locator("#havre_paste_send").click()
    status = page.locator("#havre_paste_status").text_content() or ""
    assert status.startswith(f"Sent {len(code)} characters"), status
    # the box gave the focus back to the canvas: Ctrl+V there pastes into the console's
    # prompt (focused since the tests above), Shift+Enter runs it
    page.keyboard.press("Control+v")
    page.keyboard.press("Shift+Enter")
    pasted = _wait_for(
        "the pasted code's file in dora's home",
        lambda: _exec(s.notebook, ["sh", "-c", f"cat ~/{PASTED_FILE} 2>/dev/null"]),
    )
    assert pasted == marker
    # one audit line on the desktop container's log (what the SIEM reads): who, where, how
    # many characters and their SHA-256; never the text
    log = s.desktop.logs().decode(errors="replace")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    sha = hashlib.sha256(code.encode("latin-1")).hexdigest()
    (line,) = [x for x in lines if x.get("sha256") == sha]
    assert line["event"] == "desktop.paste" and line["level"] == "INFO", line
    assert (line["user"], line["project"], line["characters"]) == ("dora", "renal", len(code))
    assert marker not in log


#: JavaScript shown as a console output in dora's JupyterLab, run by the desktop's Chromium:
#: it asks the canary for the token, then writes how that went to ``js-probe.txt`` in her home
#: through the page's own origin (the desktop's loopback proxy adds the server's token)
SCRIPT_OUTPUT = (
    "from IPython.display import Javascript; Javascript(\"fetch('{url}', {{mode: 'no-cors'}})"
    ".then(() => 'reached', e => 'failed: ' + e).then(r => fetch('{prefix}api/contents/"
    "js-probe.txt', {{method: 'PUT', headers: {{'Content-Type': 'application/json'}}, "
    "body: JSON.stringify({{type: 'file', format: 'text', content: r}})}}))\")"
)


def test_a_script_in_a_notebook_output_cannot_reach_the_host(desktop_session):
    """The desktop's browser has no route out: a script in an output of dora's console, run by
    the desktop's own Chromium (same binary, namespace and policies as the kiosk: it *is* the
    kiosk), can't reach a canary on the host. Control: the same request from a throwaway
    container of the desktop image on a plain bridge network reaches it."""
    s = desktop_session
    client = s.desktop.client
    with canary_on_a_bridge(client) as (network, gateway, canary):
        control = new_token()
        out = client.containers.run(
            s.desktop.image.tags[0] if s.desktop.image.tags else s.desktop.image.id,
            ["python3", "-c", PROBE, "http", gateway, str(canary.port), control],
            entrypoint=[],
            network=network,
            remove=True,
            labels={probes.CONTROL_LABEL: "1"},
        )
        token = new_token()
        code = SCRIPT_OUTPUT.format(
            url=f"http://{gateway}:{canary.port}/{token}", prefix="/user/dora/renal/"
        )
        s.user.page.keyboard.type(code, delay=10)
        s.user.page.keyboard.press("Shift+Enter")
        outcome = _wait_for(
            "the output's script ran in the desktop's Chromium",
            lambda: _exec(s.notebook, ["sh", "-c", "cat ~/js-probe.txt 2>/dev/null"]),
        )
        time.sleep(probes.SETTLE)
        assert parse_probe(out)["sent"] and canary.saw(control), "the control did not arrive"
        assert outcome.startswith("failed") and not canary.saw(token), outcome
    DESKTOP_PROBE_TABLE.append(
        ("script in an output -> host canary", "arrived (desktop image)", "nothing arrived")
    )


def test_a_kernel_cannot_drive_the_desktop(desktop_session):
    s = desktop_session
    python = "/opt/havre/venv/bin/python"
    # the kernel's view: websockify on the shared loopback, without or with a guessed token
    assert _exec(s.notebook, [python, "-c", WEBSOCKIFY_PROBE, "/"]).startswith("no VNC")
    guess = "/?token=" + "0" * 48
    assert _exec(s.notebook, [python, "-c", WEBSOCKIFY_PROBE, guess]).startswith("no VNC")
    # the token is in the desktop's own /tmp, which the notebook's processes don't see
    assert _exec(s.notebook, ["sh", "-c", "ls /tmp/desktop 2>&1"]).endswith(
        "No such file or directory"
    )
    # control: the same handshake with the desktop's token gets VNC's greeting
    token = _exec(s.desktop, ["cat", "/tmp/desktop/websockify.tokens"]).split(":", 1)[0]
    assert len(token) == 48, token
    assert _exec(s.notebook, [python, "-c", WEBSOCKIFY_PROBE, f"/?token={token}"]) == "RFB"


def _websocket_status(user, url: str) -> int:  # noqa: ANN001
    """The status of a websocket handshake to ``url`` with ``user``'s cookies (101: open)."""
    cookie = "; ".join(f"{c.name}={c.value}" for c in user.session.cookies)
    try:
        ws = websocket.create_connection(
            url.replace("http://", "ws://", 1), header=[f"Cookie: {cookie}"], timeout=30
        )
    except websocket.WebSocketBadStatusException as refused:
        return refused.status_code
    ws.close()
    return 101


#: JupyterLab's routes a browser uses on a browser-tier server (each answers alice there)
LAB_ROUTES = ("lab", "api/contents", "api/kernels", "api/sessions", "api/terminals", "api/me")
#: routes refused on both tiers (the browser tier's download guard refuses them as well)
EXPORT_ROUTES = ("files/getting-started.ipynb", "nbconvert/html/getting-started.ipynb", "static/")


def test_jupyterlabs_routes_of_the_desktop_project_are_not_routable(desktop_session, alice_cardio):
    dora = desktop_session.hub
    # dora's requests session signs in to her server as her browser did (noVNC answers)
    r = dora.session.get(dora.server_url("renal"), timeout=60)
    assert r.status_code == 200 and "noVNC" in r.text, (r.status_code, r.url)
    alice, _container = alice_cardio
    alice.open_server("cardio")
    table = []
    for path in LAB_ROUTES + EXPORT_ROUTES:
        control = alice.session.get(alice.server_url("cardio", path), timeout=60)
        result = dora.session.get(dora.server_url("renal", path), timeout=60)
        table.append((path, control.status_code, result.status_code))
        assert result.status_code == 403 and "pixels only" in result.text, (path, result.text)
        if path in LAB_ROUTES:
            assert control.status_code == 200, (path, control.status_code)
    # the kernel and terminal websockets: an upgrade on alice's server connects (a kernel and a
    # terminal she started), the same upgrade on dora's is refused by the pixels-only guard
    xsrf = alice.session.cookies.get("_xsrf", path="/user/alice/cardio/") or ""
    kernel = alice.session.post(
        alice.server_url("cardio", "api/kernels"), headers={"X-XSRFToken": xsrf}, timeout=60
    )
    terminal = alice.session.post(
        alice.server_url("cardio", "api/terminals"), headers={"X-XSRFToken": xsrf}, timeout=60
    )
    assert kernel.status_code == 201 and terminal.status_code == 200, (kernel, terminal)
    sockets = {
        "api/kernels/<id>/channels": f"api/kernels/{kernel.json()['id']}/channels",
        "terminals/websocket/<name>": f"terminals/websocket/{terminal.json()['name']}",
    }
    try:
        for label, path in sockets.items():
            control = _websocket_status(alice, alice.server_url("cardio", path))
            result = _websocket_status(dora, dora.server_url("renal", path))
            table.append((f"{label} (websocket)", control, result))
            assert control == 101 and result == 403, (label, control, result)
    finally:
        alice.session.delete(
            alice.server_url("cardio", f"api/kernels/{kernel.json()['id']}"),
            headers={"X-XSRFToken": xsrf},
            timeout=30,
        )
        alice.session.delete(
            alice.server_url("cardio", f"api/terminals/{terminal.json()['name']}"),
            headers={"X-XSRFToken": xsrf},
            timeout=30,
        )
    print("\nroute: browser tier (alice/cardio) -> desktop tier (dora/renal)")
    for path, control, status in table:
        print(f"  {path:<40} {control} -> {status}")


# -- the desktop container passes the notebook container's isolation probes ------------------
#
# tests/integration/test_isolation.py's probe set, run inside dora's desktop container (docker
# exec as its own user, uid 1100, under its own seccomp profile and capabilities, with the
# desktop image's own python3), each with the same positive control as for a notebook.

#: (channel, control result, desktop result), printed at the end of the run
DESKTOP_PROBE_TABLE: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module")
def desktop_controls(docker_client) -> Iterator[dict[str, str]]:
    yield from probes.control_networks(docker_client, prefix="havretest-dcontrol")


def _desktop_probes(desktop, calls: list[tuple[str, str, int, str]]) -> list[dict]:
    """The probes ``(kind, host, port, token)`` run in the desktop, side by side."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: probes.in_container(desktop, *call), calls))


def test_the_desktop_runs_the_probes_as_its_own_user(dora_pair):
    _dora, _notebook, desktop = dora_pair
    # the probe script runs on the desktop image's own python3, as uid 1100, no capabilities
    assert _exec(desktop, ["id", "-u"]) == "1100"
    assert _exec(desktop, ["python3", "-c", "print('ok')"]) == "ok"
    status = _exec(desktop, ["grep", "-E", "^(CapEff|Seccomp):", "/proc/self/status"])
    assert "CapEff:\t0000000000000000" in status and "Seccomp:\t2" in status, status


def test_the_desktop_reaches_no_host_service_through_a_gateway(
    enclave, dora_pair, desktop_controls
):
    _dora, _notebook, desktop = dora_pair
    client = enclave.docker
    tcp, udp = tcp_canary("0.0.0.0"), udp_canary("0.0.0.0")
    try:
        control_gw = probes.gateway_of(client, desktop_controls["internal"])
        targets = [
            probes.gateway_of(client, enclave.config.network_name("renal")),
            probes.gateway_of(client, f"{enclave.config.name}-front"),
            "172.17.0.1",  # docker0, the default bridge's gateway
        ]
        calls, controls = [], {}
        for kind, canary in (("tcp", tcp), ("udp", udp)):
            controls[kind] = new_token()
            probes.in_control(
                client, desktop_controls["internal"], kind, control_gw, canary.port, controls[kind]
            )
            calls += [(kind, target, canary.port, new_token()) for target in targets]
        _desktop_probes(desktop, calls)
        time.sleep(probes.SETTLE)
        for kind, canary in (("tcp", tcp), ("udp", udp)):
            assert canary.saw(controls[kind]), f"control {kind} probe did not reach the canary"
            DESKTOP_PROBE_TABLE.append(
                (f"host {kind.upper()} via gateway", "arrived", "nothing arrived")
            )
        leaked = [(k, h) for k, h, _p, token in calls if (tcp if k == "tcp" else udp).saw(token)]
        assert leaked == [], f"the desktop reached the host through {leaked}"
    finally:
        tcp.close()
        udp.close()


def test_the_desktop_reaches_no_other_project_and_no_proxy_port(enclave, dora_pair, alice_cardio):
    _dora, _notebook, desktop = dora_pair
    _alice, alice_notebook = alice_cardio
    client = enclave.docker
    cardio = enclave.config.network_name("cardio")
    hub = f"{enclave.config.name}-hub"
    canary = probes.canary_container(client, cardio)
    try:
        canary_ip = probes.ip_on(canary, cardio)
        control = new_token()
        probes.in_control(client, cardio, "tcp", canary_ip, 7000, control)
        assert probes.in_control(client, f"{enclave.config.name}-front", "tcp", hub, 8000, "x")[
            "sent"
        ]
        token = new_token()
        calls = [
            ("tcp", canary_ip, 7000, token),
            ("tcp", probes.ip_on(alice_notebook, cardio), 8888, new_token()),
            ("tcp", hub, 8000, new_token()),
            ("tcp", hub, 8001, new_token()),
            # needed by the notebook server it shares a namespace with: they answer
            ("tcp", hub, 8081, new_token()),
            ("tcp", f"{enclave.config.name}-egress", 8090, new_token()),
        ]
        results = _desktop_probes(desktop, calls)
        time.sleep(probes.SETTLE)
        logs = canary.logs().decode()
        assert control in logs, "the control did not reach the canary on cardio"
        assert token not in logs and results[0]["error"], results[0]
        assert results[1]["error"], "the desktop reached alice's notebook server"
        assert results[2]["error"] and results[3]["error"], results[2:4]
        assert results[4]["sent"] and results[5]["sent"], results[4:]
    finally:
        canary.remove(force=True)
    # the proxy's API port listens inside the hub (control)
    _code, out = enclave.hub_container().exec_run(
        ["python3", "-c", PROBE, "tcp", "127.0.0.1", "8001", "x"]
    )
    assert parse_probe(out)["sent"]
    DESKTOP_PROBE_TABLE.extend(
        [
            ("another project's containers (TCP)", "arrived", "nothing arrived"),
            ("proxy public port 8000 on the hub", "connected", "refused"),
            ("proxy API port 8001", "connected (inside hub)", "refused"),
        ]
    )


def test_the_desktops_lookups_of_outside_names_never_reach_a_resolver(
    enclave, dora_pair, desktop_controls
):
    _dora, _notebook, desktop = dora_pair
    resolver = udp_canary("127.0.0.1", 53)
    try:
        with host_resolver_on_loopback("127.0.0.1"):
            control = new_token()
            probes.in_control(enclave.docker, desktop_controls["internal"], "dns", "-", 0, control)
            calls = [("dns", "-", 0, new_token()), ("dns-raw", "127.0.0.11", 53, new_token())]
            _desktop_probes(desktop, calls)
            time.sleep(probes.SETTLE)
        assert resolver.saw(control), "the control lookup did not reach the canary resolver"
        assert not any(resolver.saw(call[3]) for call in calls), "a lookup reached the resolver"
        DESKTOP_PROBE_TABLE.append(
            ("DNS lookup of an outside name", "query arrived", "no query arrived")
        )
    finally:
        resolver.close()


def test_the_desktop_reaches_no_metadata_service_and_has_no_ipv6(
    enclave, dora_pair, desktop_controls
):
    _dora, _notebook, desktop = dora_pair
    client = enclave.docker
    with host_address("169.254.169.254"):
        canary = tcp_canary("169.254.169.254", 80)
        try:
            control = new_token()
            probes.in_control(
                client, desktop_controls["bridge"], "http", "169.254.169.254", 80, control
            )
            token = new_token()
            result = probes.in_container(desktop, "http", "169.254.169.254", 80, token)
            time.sleep(probes.SETTLE)
            assert canary.saw(control), "control could not reach the fake metadata service"
            assert not canary.saw(token) and result["error"], result
        finally:
            canary.close()
    DESKTOP_PROBE_TABLE.append(("metadata 169.254.169.254 (HTTP)", "arrived", "nothing arrived"))

    # IPv6: the control (an IPv6-enabled container) reaches the host's link-local address on
    # its bridge; the desktop has no IPv6 address at all, so the same probe has no route
    canary = tcp_canary("::", 0, family=socket.AF_INET6)
    control = client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        ["sleep", "60"],
        network=desktop_controls["internal"],
        user="0",
        detach=True,
        labels={probes.CONTROL_LABEL: "1"},
        sysctls={
            "net.ipv6.conf.all.disable_ipv6": "0",
            "net.ipv6.conf.default.disable_ipv6": "0",
            "net.ipv6.conf.eth0.disable_ipv6": "0",
        },
    )
    try:
        renal_ll = link_local_address(
            probes.bridge_interface(client, enclave.config.network_name("renal"))
        )
        token = new_token()
        result = probes.in_container(desktop, "tcp6", f"{renal_ll}%eth0", canary.port, token)
        assert _exec(desktop, ["cat", "/proc/net/if_inet6"]) == ""
        control_ll = link_local_address(
            probes.bridge_interface(client, desktop_controls["internal"])
        )
        deadline = time.monotonic() + 10  # the control's duplicate address detection
        control_token = new_token()
        while time.monotonic() < deadline:
            _code, out = control.exec_run(
                ["python3", "-c", PROBE, "tcp6", f"{control_ll}%eth0", str(canary.port)]
                + [control_token]
            )
            if parse_probe(out)["sent"]:
                break
            time.sleep(0.5)
        time.sleep(probes.SETTLE)
        assert canary.saw(control_token), f"control could not reach the host over IPv6: {out!r}"
        assert not canary.saw(token) and result["error"], result
        DESKTOP_PROBE_TABLE.append(
            ("IPv6 link-local to the host", "arrived", "nothing arrived (no IPv6)")
        )
    finally:
        control.remove(force=True)
        canary.close()


def test_the_desktop_has_no_raw_or_icmp_socket(enclave, dora_pair):
    _dora, _notebook, desktop = dora_pair
    client = enclave.docker
    renal = enclave.config.network_name("renal")
    hub_ip = probes.ip_on(enclave.hub_container(), renal)
    control = probes.in_control(client, renal, "icmp-raw", hub_ip, 0, "-")
    assert control.get("reply"), control
    dgram_control = probes.in_control(client, renal, "icmp-dgram", hub_ip, 0, "-", user="1100")
    assert dgram_control.get("reply"), dgram_control
    raw, dgram = _desktop_probes(
        desktop, [("icmp-raw", hub_ip, 0, "-"), ("icmp-dgram", hub_ip, 0, "-")]
    )
    assert "PermissionError" in (raw["error"] or ""), raw
    assert dgram["error"] and not dgram.get("reply"), dgram
    DESKTOP_PROBE_TABLE.extend(
        [
            ("raw socket (ICMP echo)", "echo reply", "PermissionError: no socket"),
            ("ICMP datagram socket to the hub", "echo reply (uid 1100)", "refused: no socket"),
        ]
    )


# -- the desktop's Chromium is locked down (images/desktop/chromium-policy.json) ---------------
#
# One script, shown as the output of one line typed through the canvas and run by the desktop's
# own Chromium (the kiosk: a Chromium started apart under the same policies proves nothing),
# tries every way out in turn and writes what it saw into dora's home through the server's API
# (the desktop's loopback proxy adds the server's token). A canary listening on the loopback
# the desktop shares with its notebook server, which the desktop's network does reach (the
# script's own fetch of it is the control), tells whether a navigation left the page: there,
# only the URL allow-list stands in the way (a canary on the host would also be cut off by the
# network, so it could not show the policy). Then keys typed through the canvas: F8, on which
# the script opens a pop-up (pop-ups need a user's action), and Chromium's own keys for a file
# chooser and printing; the script, still running, reports what its window saw meanwhile, and
# the desktop's X server lists its windows. Seen failing with the desktop image without its
# policies: the canary heard the frames and the form, the blob download was saved in
# ~/Downloads, window.print() held the script in a print dialog, the file chooser and Ctrl+O
# opened a dialog ("Open File"), Ctrl+P began printing.

#: where the script is put for the kernel to read, in the notebook container's own /tmp
LOCKDOWN_SCRIPT = "/tmp/havre-lockdown-probe.js"
#: the one line typed through the canvas
LOCKDOWN_LINE = f"from IPython.display import Javascript; Javascript(filename='{LOCKDOWN_SCRIPT}')"
#: the observation files the script writes in dora's home, and the file that tells it the
#: keys were typed
LOCKDOWN_SEEN, LOCKDOWN_KEYS_SEEN, LOCKDOWN_GO = (
    "lockdown-seen.json",
    "lockdown-keys-seen.json",
    "lockdown-go",
)
#: keys that open Chromium's file chooser ("open file") and print preview when the policies
#: allow them (not Ctrl+S, "save page as": JupyterLab takes it to save the document). The
#: developer tools' keys (F12, Ctrl+Shift+I/J, Ctrl+U) are not among them: with the policy
#: Chromium answers them with "DevTools not allowed on this page", but without it this kiosk
#: showed no developer tools either (no window, no panel taking room, no tab), so no
#: observable here tells the policy's work apart (docs/architecture.md, row 11)
LOCKDOWN_KEYS = ("Control+O", "Control+P")
#: the close button of the bar Chromium shows over the page when a file chooser is refused
INFOBAR_CLOSE = (1249, 28)

#: a canary for the desktop's loopback, run in the desktop container as ``python3 -c ... DIR``:
#: it writes the port it got to DIR/port and each request's first line to DIR/requests, and
#: exits when DIR/stop appears (or after two minutes)
LOOPBACK_CANARY = r"""
import os, socket, sys, time
run = sys.argv[1]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
s.settimeout(0.2)
with open(run + "/port.tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(run + "/port.tmp", run + "/port")
end = time.monotonic() + 120
while time.monotonic() < end and not os.path.exists(run + "/stop"):
    try:
        conn, _ = s.accept()
    except socket.timeout:
        continue
    conn.settimeout(2)
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass
    conn.close()
    with open(run + "/requests", "ab") as f:
        f.write(data.split(b"\r\n", 1)[0] + b"\n")
"""

#: the desktop's top-level windows by title (X11's QueryTree, GetWindowAttributes and the
#: WM_NAME property, spoken on the X socket with the desktop's cookie: the image has no X
#: client tools), run in the desktop container as ``python3 -c X11_WINDOWS``
X11_WINDOWS = r"""import os, socket, struct, sys
def pad(n):
    return (4 - n % 4) % 4
def xauth(path):
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        fields = []
        i += 2
        for _ in range(4):
            (n,) = struct.unpack(">H", data[i : i + 2])
            fields.append(data[i + 2 : i + 2 + n])
            i += 2 + n
        if fields[2] == b"MIT-MAGIC-COOKIE-1":
            return fields[2], fields[3]
    return b"", b""
s = socket.socket(socket.AF_UNIX)
s.connect("/tmp/.X11-unix/X0")
def recv(n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise SystemExit("X closed")
        out += chunk
    return out
name, cookie = xauth(os.environ.get("XAUTHORITY", "/tmp/desktop/Xauthority"))
setup = struct.pack("<BxHHHHxx", 0x6C, 11, 0, len(name), len(cookie))
s.sendall(setup + name + b"\0" * pad(len(name)) + cookie + b"\0" * pad(len(cookie)))
head = recv(8)
extra = recv(struct.unpack("<H", head[6:8])[0] * 4)
if head[0] != 1:
    raise SystemExit("X refused: " + extra.decode(errors="replace"))
vendor_len, = struct.unpack("<H", extra[16:18])
n_formats = extra[21]
screen = 32 + vendor_len + pad(vendor_len) + 8 * n_formats
root, = struct.unpack("<I", extra[screen : screen + 4])
def request(data):
    s.sendall(data)
    while True:
        reply = recv(32)
        if reply[0] == 0:
            return None  # an error
        if reply[0] == 1:
            (more,) = struct.unpack("<I", reply[4:8])
            return reply + recv(more * 4)
def children(window):
    r = request(struct.pack("<BxHI", 15, 2, window))
    (n,) = struct.unpack("<H", r[16:18])
    return struct.unpack(f"<{n}I", r[32 : 32 + 4 * n])
def mapped(window):
    r = request(struct.pack("<BxHI", 3, 2, window))
    return r is not None and r[26] == 2
def name(window):
    r = request(struct.pack("<BBHIIIII", 20, 0, 6, window, 39, 0, 0, 256))
    if r is None or r[1] != 8:
        return ""
    (n,) = struct.unpack("<I", r[16:20])
    return r[32 : 32 + n].decode("latin-1")
def title(window, depth=0):
    found = name(window)
    for child in children(window) if depth < 2 and not found else ():
        found = found or title(child, depth + 1)
    return found
for window in children(root):
    if mapped(window):
        print(title(window) or "(no title)")
"""

#: the script (``__CONFIG__`` becomes {prefix, canary, token, seen, keysSeen, go})
LOCKDOWN_JS = r"""
(async () => {
  const C = __CONFIG__;
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const events = [];
  const on = (target, name, label) => target.addEventListener(name, (e) => {
    if (e.target === target || target === document) events.push([label(), ms()]);
  });
  on(window, "blur", () => "blur");
  on(window, "focus", () => "focus");
  on(window, "resize", () => `resize ${innerWidth}x${innerHeight}`);
  on(window, "beforeprint", () => "beforeprint");
  on(window, "afterprint", () => "afterprint");
  on(document, "visibilitychange", () => `visibility ${document.visibilityState}`);
  window.addEventListener("keydown", (e) => events.push([
    `key ${e.ctrlKey ? "Control+" : ""}${e.shiftKey ? "Shift+" : ""}${e.key}`
    + (e.defaultPrevented ? " (taken by the page)" : ""), ms()]));
  const sleep = (t) => new Promise((r) => setTimeout(r, t));
  // a pop-up needs a user's action: the test's F8, typed through the canvas, opens one
  let popup = "no F8";
  window.addEventListener("keydown", (e) => {
    if (e.key !== "F8" || popup !== "no F8") return;
    const w = window.open(`${C.canary}open-${C.token}`);
    popup = w ? "a window" : "null";
    if (w) setTimeout(() => { try { w.close(); } catch (err) { /* gone */ } }, 1000);
  });
  const seen = {size: `${innerWidth}x${innerHeight}`};
  const put = (name, value) => fetch(C.prefix + "api/contents/" + name, {
    method: "PUT", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({type: "file", format: "text", content: JSON.stringify(value, null, 1)}),
  });
  const step = async (name, attempt) => {
    try { seen[name] = await attempt(); } catch (e) { seen[name] = `threw ${e}`; }
    events.push([`(${name})`, ms()]);
  };
  const url = (label) => `${C.canary}${label}-${C.token}`;
  const frame = (name) => {
    const f = document.createElement("iframe");
    f.name = name;
    f.style.cssText = "position: fixed; width: 8px; height: 8px; bottom: 0; right: 0";
    document.body.append(f);
    added.push(f);
    return f;
  };
  const added = [];  // what the script adds to the page, removed at the end
  const opened = [];

  // file choosers (first: the key press that ran the cell still counts as a user's action)
  seen.user_activation = navigator.userActivation ? navigator.userActivation.isActive : null;
  await step("file chooser", () => new Promise((resolve) => {
    const input = document.createElement("input");
    input.type = "file";
    input.style.display = "none";
    document.body.append(input);
    added.push(input);
    const start = performance.now();
    input.addEventListener("cancel", () =>
      resolve(`cancelled without a dialog (${Math.round(performance.now() - start)} ms)`));
    input.addEventListener("change", () => resolve("a file was chosen"));
    input.click();
    setTimeout(() => resolve("no answer in 2 s (a dialog is open?)"), 2000);
  }));

  // controls: the server's own API, and the canary by fetch (the allow-list filters
  // navigations, not a page's requests)
  await step("control: fetch the server's api/status", async () =>
    (await fetch(C.prefix + "api/status")).status);
  await step("control: fetch the loopback canary", async () => {
    await fetch(url("fetch"), {mode: "no-cors"});
    return "sent";
  });
  // navigation out of the server, five ways
  await step("frame src", () => { frame("src").src = url("frame"); return "set"; });
  await step("frame location", () => {
    frame("location").contentWindow.location.href = url("location");
    return "set";
  });
  await step("form post", () => {
    frame("post");
    const form = document.createElement("form");
    form.method = "POST";
    form.action = url("post");
    form.target = "post";
    const field = document.createElement("input");
    field.name = "data";
    field.value = "rows";
    form.append(field);
    document.body.append(form);
    added.push(form);
    form.submit();
    return "submitted";
  });

  // downloads, four ways
  const bytes = new Blob([`havre ${C.token}`], {type: "application/octet-stream"});
  const blob = URL.createObjectURL(bytes);
  const data = "data:application/octet-stream;base64," + btoa(`havre ${C.token}`);
  for (const [name, href] of [["blob", blob], ["data", data]]) {
    await step(`download: <a download> of a ${name}: URL`, () => {
      const a = document.createElement("a");
      a.href = href;
      a.download = `havre-download-${name}-${C.token}.txt`;
      document.body.append(a);
      added.push(a);
      a.click();
      return "clicked";
    });
    await step(`download: a frame on a ${name}: URL`, () => {
      frame(name).src = href;
      return "set";
    });
  }

  // printing: a print dialog would hold the script on this line (what it saw so far is saved)
  seen.events = events.slice();
  await put(C.seen, seen);
  await step("window.print()", () => {
    const start = performance.now();
    window.print();
    return `returned after ${Math.round(performance.now() - start)} ms`;
  });

  await sleep(2500);  // navigations and downloads settle
  for (const w of opened) { try { w.close(); } catch (e) { /* gone */ } }
  for (const element of added) element.remove();
  seen.events = events.slice();
  seen.visibility = document.visibilityState;
  seen.focused = document.hasFocus();
  // the keys that follow go to the page, not to the console's editor (whose own bindings,
  // e.g. Ctrl+U, would take them before Chromium could act); the editor gets its focus back
  const editor = document.activeElement;
  if (editor && editor.blur) editor.blur();
  seen.done = true;
  await put(C.seen, seen);

  // the keys, typed by the test through the canvas: report when told they have been
  const before = events.length;
  const deadline = performance.now() + 90000;
  while (performance.now() < deadline) {
    if ((await fetch(C.prefix + "api/contents/" + C.go + "?content=0")).ok) break;
    await sleep(300);
  }
  await put(C.keysSeen, {
    popup, events: events.slice(before), size: `${innerWidth}x${innerHeight}`,
    visibility: document.visibilityState, focused: document.hasFocus(),
  });
  if (editor && editor.focus) editor.focus();
})();
"""


@dataclass
class Lockdown:
    """What the lock-down probe saw (see :data:`LOCKDOWN_JS`)."""

    token: str
    seen: dict  # the script's observations, attempt by attempt
    keys_seen: dict  # what its window saw while the keys were typed
    requests: list[str]  # the first line of each request the loopback canary received
    files: list[str]  # files named like a download or a saved page in the desktop's /tmp
    windows: dict[str, list[str]]  # the desktop's windows by title, before and after each key


#: where a download or a saved page would be (names matched in the desktop's writable places,
#: ``{token}`` replaced; the desktop's root filesystem is read-only, /tmp a tmpfs)
DOWNLOAD_NAMES = ("*{token}*", "*.crdownload", "Downloads", "*.htm*", "*.mhtml", "*.pdf")


def _lockdown_files(desktop, token: str, canary_dir: str) -> list[str]:  # noqa: ANN001
    names = " -o ".join(f"-name '{n.format(token=token)}'" for n in DOWNLOAD_NAMES)
    profile = "/tmp/desktop/chromium"  # Chromium's profile: its own files, never a download
    found = _exec(
        desktop,
        [
            "sh",
            "-c",
            f"find /tmp /dev/shm /var/tmp -xdev \\( -path {profile} -o -path {canary_dir} \\) "
            f"-prune -o \\( {names} \\) -print 2>/dev/null",
        ],
    )
    return found.split()


@pytest.fixture(scope="module")
def lockdown(desktop_session) -> Iterator[Lockdown]:
    """Run the lock-down probe once in dora's desktop (after the tests above, which leave
    JupyterLab's console focused) and collect what it saw."""
    s = desktop_session
    token = new_token()
    canary_dir = f"/tmp/havre-canary-{token[:12]}"
    _exec(s.desktop, ["mkdir", canary_dir])
    s.desktop.exec_run(["python3", "-c", LOOPBACK_CANARY, canary_dir], detach=True)
    try:
        port = _wait_for(
            "the loopback canary's port",
            lambda: _exec(s.desktop, ["sh", "-c", f"cat {canary_dir}/port 2>/dev/null"]),
            deadline=20,
        )
        config = {
            "prefix": "/user/dora/renal/",
            "canary": f"http://127.0.0.1:{port}/",
            "token": token,
            "seen": LOCKDOWN_SEEN,
            "keysSeen": LOCKDOWN_KEYS_SEEN,
            "go": LOCKDOWN_GO,
        }
        script = LOCKDOWN_JS.replace("__CONFIG__", json.dumps(config))
        write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
        _exec(s.notebook, ["python3", "-c", write, LOCKDOWN_SCRIPT, script])
        files = (LOCKDOWN_SEEN, LOCKDOWN_KEYS_SEEN, LOCKDOWN_GO)
        _exec(s.notebook, ["sh", "-c", "cd && rm -f " + " ".join(files)])

        def read(name: str):  # noqa: ANN202
            text = _exec(s.notebook, ["sh", "-c", f"cat ~/{name} 2>/dev/null"])
            return json.loads(text) if text else None

        page = s.user.page
        page.keyboard.type(LOCKDOWN_LINE, delay=10)
        page.keyboard.press("Shift+Enter")

        def finished():  # noqa: ANN202
            seen = read(LOCKDOWN_SEEN)
            return seen if seen and seen.get("done") else None

        try:
            seen = _wait_for("the lock-down probe's end", finished, 30)
        except AssertionError:  # held up (by a dialog?): what it saw before, for the tests below
            seen = read(LOCKDOWN_SEEN) or {}
        # Escape closes what the script opened (Chromium's "download multiple files?" question),
        # then each key, and Escape for whatever it opened (a refusal, a panel, a dialog)
        page.keyboard.press("Escape")
        time.sleep(0.5)

        def windows() -> list[str]:
            return _exec(s.desktop, ["python3", "-c", X11_WINDOWS]).splitlines()

        shown = {"before": windows()}
        for key in ("F8", *LOCKDOWN_KEYS):  # F8: the script's window.open
            page.keyboard.press(key)
            time.sleep(1.5 if key == "F8" else 0.7)
            shown[key] = windows()  # (while whatever the key opened is open)
            page.keyboard.press("Escape")
            time.sleep(0.5)
        # the file chooser's refusal left Chromium's bar "Access to local files on your machine
        # is disabled by your administrator" over the page: close it (its x, top right)
        box = page.locator("canvas").bounding_box()
        assert box is not None, "no canvas"
        page.mouse.click(box["x"] + INFOBAR_CLOSE[0], box["y"] + INFOBAR_CLOSE[1])
        time.sleep(0.5)
        _exec(s.notebook, ["sh", "-c", f": > ~/{LOCKDOWN_GO}"])
        try:
            keys_seen = _wait_for("what the page saw of the keys", lambda: read(LOCKDOWN_KEYS_SEEN))
        except AssertionError:
            keys_seen = {"events": []}
        requests = _exec(s.desktop, ["sh", "-c", f"cat {canary_dir}/requests 2>/dev/null"])
        found = _lockdown_files(s.desktop, token, canary_dir)
        lockdown = Lockdown(token, seen, keys_seen, requests.splitlines(), found, shown)
        print("\nthe desktop's Chromium, lock-down probe:")
        report = {**seen, "keys_seen": keys_seen, "canary": lockdown.requests, "windows": shown}
        print(json.dumps(report, indent=1))
        print("files named like a download:", found)
        page.screenshot(path=str(SCREENSHOTS / "desktop-lockdown.png"))
        yield lockdown
    finally:
        _exec(s.desktop, ["sh", "-c", f": > {canary_dir}/stop"])


def test_the_lockdown_probe_ran_and_its_controls_passed(lockdown):
    seen = lockdown.seen
    # the script ran to its end in the desktop's Chromium and wrote through the server's API
    assert seen.get("done") and seen["control: fetch the server's api/status"] == 200, seen
    # the canary is reachable from the page: its fetch (not a navigation) arrived
    assert seen["control: fetch the loopback canary"] == "sent", seen
    assert any(f"/fetch-{lockdown.token}" in line for line in lockdown.requests), lockdown.requests


NAVIGATIONS = ("window.open", "frame src", "frame location", "form post")
NAVIGATION_LABELS = {
    "window.open": "open",
    "frame src": "frame",
    "frame location": "location",
    "form post": "post",
}


@pytest.mark.parametrize("attempt", NAVIGATIONS)
def test_the_desktops_chromium_navigates_nowhere_but_its_server(lockdown, attempt):
    label = NAVIGATION_LABELS[attempt]
    if attempt == "window.open":  # (on the test's F8, a user's action, as pop-ups need)
        assert lockdown.keys_seen.get("popup") in ("null", "a window"), lockdown.keys_seen
    else:
        result = lockdown.seen.get(attempt, "threw: not tried")
        assert not result.startswith("threw"), (attempt, result)
    arrived = [line for line in lockdown.requests if f"/{label}-{lockdown.token}" in line]
    assert arrived == [], f"{attempt} reached the canary: {arrived}"


DOWNLOADS = ("blob", "data")


@pytest.mark.parametrize("kind", DOWNLOADS)
def test_the_desktops_chromium_saves_no_download(lockdown, kind):
    attempts = (f"download: <a download> of a {kind}: URL", f"download: a frame on a {kind}: URL")
    for attempt in attempts:
        result = lockdown.seen.get(attempt, "threw: not tried")
        assert not result.startswith("threw"), (attempt, result)
    assert lockdown.files == [], lockdown.files


def test_the_desktops_chromium_does_not_print(lockdown):
    # a print dialog would have held the script on window.print(): the next line ran, and the
    # page never heard that printing began
    assert lockdown.seen.get("window.print()", "").startswith("returned after"), lockdown.seen
    assert "beforeprint" not in [label for label, _ms in lockdown.seen["events"]], lockdown.seen


def test_the_desktops_chromium_opens_no_file_chooser(lockdown):
    assert lockdown.seen.get("file chooser", "").startswith("cancelled without"), lockdown.seen


#: keys that are only modifiers, sent before the key they modify
MODIFIERS = ("Control", "Shift", "CapsLock", "Alt")


def _after_key(events: list, key: str) -> list[str]:
    """What the page's window saw after ``key`` reached it, until the next key."""
    labels = [label for label, _ms in events]
    assert f"key {key}" in labels, f"{key} did not reach the page (or the page took it): {labels}"
    after = []
    for label in labels[labels.index(f"key {key}") + 1 :]:
        if label.startswith("key ") and label.rsplit("+", 1)[-1] not in MODIFIERS:
            break
        after.append(label)
    return after


@pytest.mark.parametrize("key", LOCKDOWN_KEYS)
def test_keys_through_the_canvas_open_no_file_chooser_or_print_preview(lockdown, key):
    # the key reached the page, which left it to Chromium; a file chooser or print preview
    # would have taken the page's focus (blur) and, for the file chooser, added a window of
    # its own ("Open File"): nothing did, the desktop's only window is still JupyterLab's
    assert _after_key(lockdown.keys_seen["events"], key) == [], lockdown.keys_seen
    windows = lockdown.windows
    assert windows["before"] == ["JupyterLab - Chromium"] == windows.get(key), windows
