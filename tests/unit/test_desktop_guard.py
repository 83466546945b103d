"""The download guard in front of an ``access: desktop`` server (issue #17): pixels only.

Real sockets on loopback: an upstream that answers every route a desktop project's browser
could try, both the remote desktop's (noVNC's files, its websocket, the sign-in steps) and
JupyterLab's (contents, files, terminals, kernels, nbconvert, static files, the lab page).
Registered as a desktop, only the desktop's routes pass; the control is the same upstream
registered as a browser-tier server, where JupyterLab's routes pass. The live version, with a
real desktop container and JupyterLab, is for tests/integration (docs/architecture.md,
"Access tiers").
"""

from __future__ import annotations

import asyncio

import pytest
from tornado import httpclient, web, websocket

from spawner.download_guard import DownloadGuard
from spawner.download_policy import DESKTOP_ROUTES, check_desktop_request, check_request
from tests.unit.guarded_upstream import Echo, free_port, guarded_upstream
from tests.unit.guarded_upstream import fetch as guarded_upstream_fetch

PREFIX = "/user/alice/renal/"
KERNEL = "0f2c5a1e-8a3b-4c2d-9e1f-123456789abc"
DATA = b"secret,cells\n4711,2\n"


class Data(web.RequestHandler):
    """Any JupyterLab route: answers with the data (what must never reach the browser)."""

    def get(self, *_: str) -> None:
        self.write(DATA)

    post = put = get


class NoVnc(web.RequestHandler):
    def get(self, rest: str) -> None:
        self.write(b"<!doctype html><title>noVNC</title>" + rest.encode())


class Redirect(web.RequestHandler):
    def get(self, *_: str) -> None:
        if self.get_argument("leak", ""):
            self.write(DATA)  # a sign-in step that answers with content
        else:
            self.redirect(PREFIX + "desktop/vnc.html")


#: the upstream's routes: a desktop's and JupyterLab's
ROUTES = [
    (PREFIX + r"desktop/(.*)", NoVnc),
    (PREFIX + r"websockify", Echo),
    (PREFIX + rf"api/kernels/{KERNEL}/channels", Echo),
    (PREFIX + r"terminals/websocket/1", Echo),
    (PREFIX + r"(login|oauth_callback)", Redirect),
    (PREFIX, Redirect),
    (PREFIX + r"(.*)", Data),
]


@pytest.fixture
def guards():
    """(loop, desktop guard, browser-tier guard): one upstream, registered both ways."""
    with guarded_upstream(ROUTES, PREFIX, desktop=(True, False)) as (loop, (desktop, browser)):
        yield loop, desktop, browser


async def fetch(guard: DownloadGuard, path: str, **kwargs) -> httpclient.HTTPResponse:
    """Redirects not followed: the sign-in steps' answers are what is checked."""
    return await guarded_upstream_fetch(guard, path, follow_redirects=False, **kwargs)


#: JupyterLab's ways to hand bytes to a browser (method, path in the server); each passes
#: the browser-tier guard (control) and is refused by the desktop guard
EXITS = [
    ("GET", "api/contents/data.csv?content=1"),
    ("PUT", "api/contents/outputs/x.csv"),
    ("GET", "lab"),
    ("GET", "lab/api/settings"),
    ("GET", "api/kernels"),
    ("POST", "api/sessions"),
    ("GET", "api/terminals"),
    ("GET", "api/me"),
]
#: refused in both tiers (the browser tier's own refusals), refused by the desktop guard too
REFUSED_BOTH = [
    ("GET", "files/data.csv"),
    ("GET", "nbconvert/html/a.ipynb"),
    ("GET", "view/a.html"),
    ("GET", "static/lab/index.js"),
    ("GET", "metrics"),
]


@pytest.mark.parametrize(("method", "path"), EXITS, ids=[f"{m} {p}" for m, p in EXITS])
def test_jupyterlabs_routes_are_not_routable_for_a_desktop_project(guards, method, path):
    loop, desktop, browser = guards
    body = b"{}" if method in ("PUT", "POST") else None
    control = loop.run_until_complete(fetch(browser, PREFIX + path, method=method, body=body))
    assert control.code == 200 and control.body == DATA, (control.code, control.body)
    r = loop.run_until_complete(fetch(desktop, PREFIX + path, method=method, body=body))
    assert r.code == 403
    assert r.headers["X-Havre-Refused"] == "desktop-only"
    assert b"4711" not in r.body
    assert b"pixels only" in r.body


@pytest.mark.parametrize(("method", "path"), REFUSED_BOTH, ids=[p for _, p in REFUSED_BOTH])
def test_the_browser_tiers_refusals_stay_refused(guards, method, path):
    loop, desktop, _ = guards
    r = loop.run_until_complete(fetch(desktop, PREFIX + path, method=method))
    assert r.code == 403 and b"4711" not in r.body


def test_the_desktop_its_websocket_and_the_sign_in_steps_pass(guards):
    loop, desktop, _ = guards
    page = loop.run_until_complete(fetch(desktop, PREFIX + "desktop/vnc.html"))
    assert page.code == 200 and b"noVNC" in page.body
    for step in ("", "login", "oauth_callback?code=x&state=y"):
        r = loop.run_until_complete(fetch(desktop, PREFIX + step))
        assert r.code == 302, step
    # a sign-in step that answers with content is refused (it may only redirect)
    leak = loop.run_until_complete(fetch(desktop, PREFIX + "login?leak=1"))
    assert leak.code == 403 and b"4711" not in leak.body

    async def talk(path: str):
        url = desktop.url.replace("http://", "ws://") + PREFIX + path
        ws = await websocket.websocket_connect(url)
        await ws.write_message(b"\x00rfb", binary=True)
        data = await ws.read_message()
        ws.close()
        return data

    assert loop.run_until_complete(talk("websockify")) == b"\x00rfb"
    # JupyterLab's websockets (kernel, terminal) are not part of the desktop
    for path in (f"api/kernels/{KERNEL}/channels", "terminals/websocket/1"):
        with pytest.raises(httpclient.HTTPClientError) as info:
            loop.run_until_complete(talk(path))
        assert info.value.code == 403, path


@pytest.mark.parametrize(
    "request_shape",
    [
        {"headers": {"Authorization": "token abc"}},
        {"headers": {"Authorization": "Bearer abc"}},
        {"query": "?token=abc"},
    ],
    ids=["token-header", "bearer-header", "token-query"],
)
def test_a_token_is_refused_on_the_desktops_routes_too(guards, request_shape):
    loop, desktop, _ = guards
    path = PREFIX + "desktop/vnc.html" + request_shape.get("query", "")
    r = loop.run_until_complete(fetch(desktop, path, headers=request_shape.get("headers")))
    assert r.code == 403 and r.headers["X-Havre-Refused"] == "token"


@pytest.mark.parametrize(
    "path",
    [
        "desktop/../api/contents/data.csv",
        "desktop/%2e%2e/files/data.csv",
        "desktop/..%2fapi%2fcontents",
        "desktop%2f..%2fmetrics",
        "websockify/../api/me",
    ],
)
def test_odd_spellings_do_not_reach_jupyterlab(guards, path):
    loop, desktop, _ = guards
    r = loop.run_until_complete(fetch(desktop, PREFIX + path))
    assert r.code == 403 and b"4711" not in r.body


def test_the_desktop_allow_list_is_exactly_the_desktops_routes():
    """Each desktop route is one the desktop's front serves; none is one of JupyterLab's."""
    names = {route.name for route in DESKTOP_ROUTES}
    assert names == {
        "desktop-start",
        "desktop-login",
        "desktop-oauth-callback",
        "desktop-novnc",
        "desktop-websocket",
    }
    # the websocket only as a websocket, the files only by GET
    assert check_desktop_request("GET", "websockify", "")[0] is not None
    assert check_desktop_request("GET", "websockify", "", websocket=True)[0] is None
    assert check_desktop_request("POST", "desktop/vnc.html", "")[0] is not None
    assert check_desktop_request("HEAD", "desktop/app/ui.js", "")[0] is None
    # control: what the browser tier allows
    assert check_request("GET", "api/contents/x", "")[0] is None
    assert check_desktop_request("GET", "api/contents/x", "")[0] is not None


def test_a_restarted_hub_keeps_a_desktop_server_pixels_only():
    """The spawner's saved state says the server is a desktop; a hub restart that forgot it
    would put JupyterLab's routes back behind the browser tier's allow-list."""
    from types import SimpleNamespace

    from jupyterhub import orm

    from spawner import download_guard
    from spawner.project_spawner import ProjectSpawner

    port = free_port()

    async def scenario():
        orm_spawner = SimpleNamespace(
            name="renal",
            display_name="renal",
            server=orm.Server(
                base_url=PREFIX, proto="http", ip="127.0.0.1", port=8082, cookie_name="c"
            ),
        )
        user = SimpleNamespace(name="alice", url="/user/alice/")
        spawner = ProjectSpawner(user=user, orm_spawner=orm_spawner, download_guard_port=port)
        spawner.guard_server("http://10.9.0.2:6080", desktop=True)
        state = spawner.get_state()
        guard = download_guard.ensure_guard("127.0.0.1", port)
        guard.routes.unregister(PREFIX)  # the hub's process restarted: the registry is empty
        restarted = ProjectSpawner(user=user, orm_spawner=orm_spawner, download_guard_port=port)
        restarted.load_state(state)
        after = guard.routes.is_desktop(PREFIX), guard.routes.lookup(PREFIX + "desktop/")
        restarted.unguard_server()
        return state, after, guard.routes.is_desktop(PREFIX)

    loop = asyncio.new_event_loop()
    try:
        state, after, after_stop = loop.run_until_complete(scenario())
        download_guard.ensure_guard("127.0.0.1", port).stop()
        download_guard._guards.pop(("127.0.0.1", port), None)
    finally:
        loop.close()
    assert state["guard_desktop"] is True
    assert after == (True, (PREFIX, "http://10.9.0.2:6080"))
    assert after_stop is False
