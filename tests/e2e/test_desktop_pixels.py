"""The remote desktop of an ``access: desktop`` project, for real (issue #17): pixels only.

The desktop container is the real ``havre/desktop`` image, created by the broker's own code
(``Broker._create_and_start``) from the policy's ``desktop_spec``: read-only root, uid 1100,
no capabilities, no mounts, in the network namespace of its notebook container. The notebook
container is the real notebook image with the broker's hardening and environment; what it runs
is a stand-in for ``jupyterhub-singleuser`` (a few lines of Python on the loopback address the
broker's ``JUPYTERHUB_SERVICE_URL`` names), because a real server needs the hub, whose image
this test does not rebuild: its ``api/me`` accepts one cookie, its ``lab`` page is a full
screen of one colour when the desktop's token comes with the request (another colour
without). Checked:

* the desktop's Chromium loaded the lab page *with* the server's token, which no request from
  outside carries;
* the researcher's Chromium (Playwright, on the host) signed in by cookie, opens noVNC through
  the desktop's front and its canvas shows that page's colour: pixels arrive;
* without the cookie the front sends the browser to sign in (no noVNC, no websocket);
* JupyterLab's routes are not served by the front (404), and the notebook server's port is
  closed from outside the pair (control: it answers inside the notebook's namespace);
* the desktop passes the broker's container checker.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest

from havre import __version__
from havre.broker.policy import (
    DESKTOP_PORT,
    check_request,
    container_problems,
    desktop_spec,
    server_spec,
)
from havre.broker.service import AuditLog, Broker
from havre.enclave.config import parse_enclave_config
from tests.docker_engine import engine_with_images
from tests.e2e.conftest import wait_for_novnc_canvas

ENCLAVE = os.environ.get("HAVRE_TEST_ENCLAVE", "havretest") + "dsk"
DESKTOP_IMAGE = f"havre/desktop:{__version__}"
NOTEBOOK_IMAGE = f"havre/notebook:{__version__}"
TOKEN = "d17" + "0123456789abcdef" * 2
PREFIX = "/user/alice/renal/"
COOKIE = "havre-test-session=signed-in"
#: the lab stand-in's colours: with the desktop's token, without
GREEN, RED = (0, 200, 83), (213, 0, 0)
DEADLINE = 120

STANDIN = f"""
import http.server, os, sys, urllib.parse
url = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
P = {PREFIX!r}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        token = self.headers.get("Authorization") == "token {TOKEN}"
        path = self.path.split("?")[0]
        print("GET", path, "token" if token else "no-token", flush=True)
        if path == P + "api/me":
            ok = {COOKIE!r} in (self.headers.get("Cookie") or "")
            self.send_response(200 if ok else 403); self.end_headers()
            self.wfile.write(b'{{"identity": {{}}}}'); return
        if path.startswith(P + "lab"):
            colour = "rgb{GREEN}" if token else "rgb{RED}"
            body = ("<!doctype html><html><body style='margin:0;background:%s'>"
                    "<div style='height:100vh'></div></body></html>" % colour).encode()
            self.send_response(200); self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body); return
        self.send_response(404); self.end_headers()
http.server.ThreadingHTTPServer((url.hostname, url.port), H).serve_forever()
"""


def _config(state: Path):
    return parse_enclave_config(
        {
            "enclave": {"name": ENCLAVE, "state_dir": str(state)},
            "images": {"allowed": [NOTEBOOK_IMAGE], "desktop": DESKTOP_IMAGE},
            "projects": {"renal": {"title": "Renal", "members": ["alice"], "access": "desktop"}},
        }
    )


@pytest.fixture(scope="module")
def desktop_pair(tmp_path_factory):
    client = engine_with_images(DESKTOP_IMAGE, NOTEBOOK_IMAGE)
    state = tmp_path_factory.mktemp("desktop")
    enclave = _config(state)
    broker = Broker(enclave, {}, AuditLog(state / "audit.jsonl"), client)
    env = {
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:8888{PREFIX}",
    }
    request = check_request(
        enclave, "hub", "server.start", {"user": "alice", "project": "renal", "env": env}
    )
    # an internal network of the test's own, where the host has an address (it plays the
    # hub's proxy); the broker's project networks give the host none
    network = f"{ENCLAVE}-net"
    for name in (
        enclave.desktop_container_name("renal", "alice"),
        enclave.container_name("renal", "alice"),
    ):
        broker.remove(name)
    try:
        client.remove_network(network)
    except docker.errors.NotFound:
        pass
    client.create_network(network, driver="bridge", internal=True)
    notebook = server_spec(enclave, request, identity=(2000001, 2000000))
    host = dict(notebook.host_config, network_mode=network, dns=["127.0.0.1"])
    notebook = dataclasses.replace(
        notebook,
        command=("/opt/havre/venv/bin/python", "-c", STANDIN),
        mounts=(),
        host_config=host,
        network=network,
    )
    desktop = desktop_spec(enclave, request, notebook=notebook.name)
    names = (desktop.name, notebook.name)
    try:
        notebook_id = broker._create_and_start(notebook, NOTEBOOK_IMAGE)
        broker._create_and_start(desktop, DESKTOP_IMAGE)
        ip = broker.inspect(notebook.name, network)["ip"]
        yield client, enclave, broker, names, ip, notebook_id
    finally:
        for name in names:
            try:
                logs = client.logs(name, tail=40).decode(errors="replace")
                print(f"--- {name}\n{logs}")
            except docker.errors.NotFound:
                pass
            broker.remove(name)
        client.remove_network(network)


def _get(url: str, cookie: str = "") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers.get("Location", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Location", ""), err.read()


def _running(client, name: str) -> bool:
    """True while container ``name`` runs; a failure with its log when it stopped."""
    if not client.inspect_container(name)["State"]["Running"]:
        raise AssertionError(f"{name} stopped:\n{client.logs(name, tail=30).decode()}")
    return True


def _wait_for(what: str, check, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except OSError as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {deadline} s (last: {last!r})")


def test_the_desktop_shows_the_servers_page_as_pixels_only(desktop_pair, browser):
    client, enclave, broker, (desk, nb), ip, notebook_id = desktop_pair
    front = f"http://{ip}:{DESKTOP_PORT}{PREFIX}"
    _wait_for(
        "the desktop's front",
        lambda: _running(client, desk) and _get(front + "desktop/vnc.html")[0] in (302, 200),
    )

    # the desktop's Chromium loaded the lab page through its loopback proxy, with the token
    _wait_for(
        "Chromium in the desktop loading the lab page with the token",
        lambda: f"GET {PREFIX}lab token" in client.logs(nb).decode(),
    )
    assert f"GET {PREFIX}lab no-token" not in client.logs(nb).decode()

    # signed out: sent to sign in, no noVNC; signed in: noVNC
    status, location, body = _get(front + "desktop/vnc.html")
    assert status == 302 and location.endswith(f"{PREFIX}login?next={PREFIX}"), (status, location)
    status, _, body = _get(front + "desktop/vnc.html", COOKIE)
    assert status == 200 and b"noVNC" in body

    # JupyterLab's routes are not served by the front; control: the server answers them inside
    for path in ("lab", "api/contents/x", "api/me", "files/x", "api/kernels", "terminals/1"):
        assert _get(front + path, COOKIE)[0] == 404, path
    inside = client.exec_create(
        nb,
        [
            "/opt/havre/venv/bin/python",
            "-c",
            "import urllib.request as u; print(u.urlopen("
            f"'http://127.0.0.1:8888{PREFIX}lab').status)",
        ],
    )
    assert client.exec_start(inside).decode().strip() == "200"
    # the notebook server's own port is closed from outside its namespace
    with pytest.raises(OSError):
        socket.create_connection((ip, 8888), timeout=5).close()

    # the researcher's browser: noVNC's canvas shows the desktop's page, as pixels
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    host = ip
    context.add_cookies(
        [
            {
                "name": COOKIE.split("=")[0],
                "value": COOKIE.split("=")[1],
                "domain": host,
                "path": PREFIX,
            }
        ]
    )
    page = context.new_page()
    page.goto(front)  # redirects to noVNC with autoconnect and the websocket's path
    wait_for_novnc_canvas(page)

    def green_share() -> float:
        """The share of the canvas's pixels that are the page's colour (read in the page)."""
        return page.evaluate(
            """([r, g, b]) => {
                const c = document.querySelector("canvas");
                if (!c || !c.width) return 0;
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let near = 0;
                for (let i = 0; i < d.length; i += 4) {
                    if (Math.abs(d[i] - r) <= 24 && Math.abs(d[i + 1] - g) <= 24
                        && Math.abs(d[i + 2] - b) <= 24) near++;
                }
                return near / (d.length / 4);
            }""",
            list(GREEN),
        )

    share = _wait_for(
        "the canvas showing the desktop's page", lambda: green_share() > 0.5 and green_share()
    )
    shots = Path(os.environ.get("HAVRE_SCREENSHOTS_DIR") or tempfile.gettempdir())
    page.screenshot(path=str(shots / "desktop-novnc.png"))
    print(f"canvas: {share:.0%} of the pixels are the page's colour")
    context.close()

    memory = client.stats(desk, stream=False)["memory_stats"].get("usage", 0)
    print(f"desktop memory after the session: {memory / 2**20:.0f} MiB (cgroup usage)")

    # the desktop is one the broker's checker accepts
    attrs = client.inspect_container(desk)
    assert container_problems(enclave, attrs, container_ids={nb: notebook_id}) == []
    assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["Config"]["User"] == "1100:1100"
    assert attrs["Mounts"] == [] or all(m["Type"] == "tmpfs" for m in attrs["Mounts"])
