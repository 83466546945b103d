"""The download guard as a process part: real sockets on loopback, a real tornado upstream.

The upstream plays a notebook server's routes (a JSON API, a raw-file route, an answer with
Content-Disposition, a websocket with a subprotocol, static assets served without a login, an
``api/me`` that knows one session cookie, a root that redirects); the guard sits in front of it
as it sits in front of notebook containers in the hub. The enclave tests repeat the attacks
against a real JupyterLab (tests/integration/test_download_guard.py).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado import httpclient, web, websocket

from spawner.download_guard import DownloadGuard
from tests.unit.guarded_upstream import Echo, fetch, free_port, guarded_upstream

PREFIX = "/user/alice/cardio/"
KERNEL = "0f2c5a1e-8a3b-4c2d-9e1f-123456789abc"
#: the cookie the upstream's api/me accepts (a signed-in browser)
SESSION = "jupyterhub-user-alice-cardio=signed-in"


class Api(web.RequestHandler):
    def get(self, rest: str) -> None:
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.add_header("Set-Cookie", "a=1; Path=/")
        self.add_header("Set-Cookie", "b=2; Path=/")
        self.write({"path": rest, "host": self.request.headers.get("Host")})

    def put(self, rest: str) -> None:
        self.set_status(201)
        self.write({"got": json.loads(self.request.body)})


class Raw(web.RequestHandler):
    def get(self, rest: str) -> None:
        self.write(b"secret,cells\n1,2\n")


class Attachment(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Disposition", 'attachment; filename="t.csv"')
        self.write(b"secret\n")


class Me(web.RequestHandler):
    #: api/me requests this server got, and how it answers (tests change these)
    asked = 0
    signed_out = False
    failing = 0  # this many next checks fail

    async def get(self) -> None:
        type(self).asked += 1
        await asyncio.sleep(0)  # let concurrent requests overlap, as a busy server does
        if type(self).failing:
            type(self).failing -= 1
            raise web.HTTPError(502)  # what HubOAuth answers when the hub can't be asked
        if type(self).signed_out or SESSION not in self.request.headers.get("Cookie", ""):
            raise web.HTTPError(403)
        self.write({"identity": {"username": "alice"}})


class Static(web.RequestHandler):
    def get(self, rest: str) -> None:  # like Jupyter Server's static files: no login asked
        self.write(b"static asset " + rest.encode())


class Root(web.RequestHandler):
    def get(self) -> None:
        if self.get_argument("leak", ""):
            self.write(b"secret,cells\n1,2\n")  # a server that answers with content here
        else:
            self.redirect(PREFIX + "lab")


#: the upstream's routes: a notebook server's
ROUTES = [
    (PREFIX + r"api/contents/(.*)", Api),
    (PREFIX + r"files/(.*)", Raw),
    (PREFIX + r"metrics", Raw),
    (PREFIX + r"api/nbconvert", Attachment),
    (PREFIX + rf"api/kernels/{KERNEL}/channels", Echo),
    (PREFIX + r"api/me", Me),
    (PREFIX + r"static/(.*)", Static),
    (PREFIX, Root),
]


@pytest.fixture
def guarded():
    Me.asked, Me.signed_out, Me.failing = 0, False, 0
    with guarded_upstream(ROUTES, PREFIX) as (loop, (guard,)):
        yield loop, guard


def test_api_passes_with_headers_cookies_and_the_notebook_csp(guarded, json_log):
    loop, guard = guarded
    r = loop.run_until_complete(
        fetch(guard, PREFIX + "api/contents/outputs/t.csv", headers={"Host": "enclave.example"})
    )
    assert r.code == 200
    assert json.loads(r.body) == {"path": "outputs/t.csv", "host": "enclave.example"}
    assert r.headers.get_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    csp = r.headers.get_list("Content-Security-Policy")
    # narrowed to this server's own addresses (issue #12: all servers share one origin)
    own = f"http://enclave.example{PREFIX} ws://enclave.example{PREFIX}"
    assert len(csp) == 1 and f"connect-src {own};" in csp[0], csp
    assert "frame-ancestors 'none'" in csp[0], csp
    assert r.headers.get_list("Cross-Origin-Opener-Policy") == ["noopener-allow-popups"]
    assert f"report-uri {PREFIX}api/security/csp-report" in csp[0]
    put = loop.run_until_complete(
        fetch(guard, PREFIX + "api/contents/x.ipynb", method="PUT", body=json.dumps({"a": 1}))
    )
    assert put.code == 201 and json.loads(put.body) == {"got": {"a": 1}}
    assert json_log.events("download.refused") == []  # allowed routes leave no security event


@pytest.mark.parametrize(
    "path",
    [
        "files/outputs/t.csv",
        "files/outputs/t.csv?download=1",
        "%66iles/outputs/t.csv",
        "api/contents/outputs/t.csv?download=1",
        "nbconvert/html/a.ipynb?download=true",
        "api/nbconvert",  # refused on the answer: it carries Content-Disposition
    ],
)
def test_download_routes_get_a_403_page_that_says_why(guarded, path, json_log):
    loop, guard = guarded
    r = loop.run_until_complete(fetch(guard, PREFIX + path))
    assert r.code == 403
    assert b"secret" not in r.body
    assert r.headers["X-Havre-Refused"]
    assert b"release" in r.body
    (logged,) = json_log.events("download.refused")  # the SIEM's line
    assert (logged["owner"], logged["project"]) == ("alice", "cardio")
    assert logged["reason"] == r.headers["X-Havre-Refused"]


def test_unknown_server_is_503(guarded):
    loop, guard = guarded
    r = loop.run_until_complete(fetch(guard, "/user/mallory/cardio/api/contents/"))
    assert r.code == 503


def test_websocket_passes_with_its_subprotocol_and_binary_frames(guarded):
    loop, guard = guarded

    async def talk():
        url = guard.url.replace("http://", "ws://") + PREFIX + f"api/kernels/{KERNEL}/channels"
        ws = await websocket.websocket_connect(
            url, subprotocols=["v1.kernel.websocket.jupyter.org"]
        )
        assert ws.selected_subprotocol == "v1.kernel.websocket.jupyter.org"
        await ws.write_message("hello")
        text = await ws.read_message()
        await ws.write_message(b"\x00\x01binary", binary=True)
        data = await ws.read_message()
        ws.close()
        return text, data

    assert loop.run_until_complete(talk()) == ("hello", b"\x00\x01binary")


def test_websocket_to_a_refused_route_is_refused(guarded):
    loop, guard = guarded

    async def talk():
        url = guard.url.replace("http://", "ws://") + PREFIX + "files/outputs/t.csv"
        await websocket.websocket_connect(url)

    with pytest.raises(httpclient.HTTPClientError) as info:
        loop.run_until_complete(talk())
    assert info.value.code == 403


@pytest.mark.parametrize(
    "headers_or_query",
    [
        {"headers": {"Authorization": "token 0123456789abcdef"}},
        {"headers": {"Authorization": "Bearer 0123456789abcdef"}},
        {"query": "?token=0123456789abcdef"},
    ],
)
def test_a_token_is_refused_even_with_a_session(guarded, headers_or_query):
    loop, guard = guarded
    headers = {"Cookie": SESSION, **headers_or_query.get("headers", {})}
    path = PREFIX + "api/contents/outputs/t.csv" + headers_or_query.get("query", "")
    r = loop.run_until_complete(fetch(guard, path, headers=headers))
    assert r.code == 403 and r.headers["X-Havre-Refused"] == "token"
    assert "outputs/t.csv" not in r.body.decode()
    assert "sign in" in json.loads(r.body)["message"]
    control = loop.run_until_complete(
        fetch(guard, PREFIX + "api/contents/outputs/t.csv", headers={"Cookie": SESSION})
    )
    assert control.code == 200  # the same request with the session alone passes


def test_a_route_off_the_allow_list_is_refused_with_a_sentence(guarded):
    loop, guard = guarded
    r = loop.run_until_complete(fetch(guard, PREFIX + "metrics", headers={"Cookie": SESSION}))
    assert r.code == 403 and r.headers["X-Havre-Refused"] == "not-allowed"
    assert b"secret" not in r.body and b"is not one of them" in r.body
    options = loop.run_until_complete(fetch(guard, PREFIX + "api/contents/t.csv", method="OPTIONS"))
    assert options.code == 403 and options.headers["X-Havre-Refused"] == "not-allowed"


def test_static_assets_need_a_session_the_server_knows(guarded):
    loop, guard = guarded
    path = PREFIX + "static/lab/main.js"
    signed_in = loop.run_until_complete(fetch(guard, path, headers={"Cookie": SESSION}))
    assert signed_in.code == 200 and signed_in.body == b"static asset lab/main.js"
    for headers in ({}, {"Cookie": "jupyterhub-user-alice-cardio=forged"}):
        r = loop.run_until_complete(fetch(guard, path, headers=headers))
        assert r.code == 403 and r.headers["X-Havre-Refused"] == "login", headers
        assert b"static asset" not in r.body and b"Sign in first" in r.body


def test_the_server_root_may_only_redirect(guarded):
    loop, guard = guarded
    r = loop.run_until_complete(fetch(guard, PREFIX, follow_redirects=False))
    assert r.code == 302 and r.headers["Location"] == PREFIX + "lab"
    leak = loop.run_until_complete(fetch(guard, PREFIX + "?leak=1", follow_redirects=False))
    assert leak.code == 403 and leak.headers["X-Havre-Refused"] == "sign-in"
    assert b"secret" not in leak.body


def test_a_restarted_hub_puts_running_servers_back_behind_the_guard():
    """The spawner saves where its container listens; loading that state (the hub starting
    with the server still running) registers it with the guard again."""
    from types import SimpleNamespace

    from jupyterhub import orm

    from spawner import download_guard
    from spawner.project_spawner import ProjectSpawner

    port = free_port()

    async def scenario():
        orm_spawner = SimpleNamespace(
            name="cardio",
            display_name="cardio",
            server=orm.Server(
                base_url=PREFIX, proto="http", ip="127.0.0.1", port=8082, cookie_name="c"
            ),
        )
        spawner = ProjectSpawner(
            user=SimpleNamespace(name="alice", url="/user/alice/"),
            orm_spawner=orm_spawner,
            download_guard_port=port,
        )
        spawner.guard_target = "http://10.9.0.2:8888"
        state = spawner.get_state()
        assert state["guard_target"] == "http://10.9.0.2:8888"
        restarted = ProjectSpawner(
            user=SimpleNamespace(name="alice", url="/user/alice/"),
            orm_spawner=orm_spawner,
            download_guard_port=port,
        )
        restarted.load_state(state)
        guard = download_guard.ensure_guard("127.0.0.1", port)
        return guard, guard.routes.lookup(PREFIX + "lab")

    loop = asyncio.new_event_loop()
    try:
        guard, found = loop.run_until_complete(scenario())
        guard.stop()
        download_guard._guards.pop(("127.0.0.1", port), None)
    finally:
        loop.close()
    assert found == (PREFIX, "http://10.9.0.2:8888")


def _many(guard: DownloadGuard, paths: list[str], cookie: str) -> list[httpclient.HTTPResponse]:
    async def go() -> list[httpclient.HTTPResponse]:
        return await asyncio.gather(*(fetch(guard, p, headers={"Cookie": cookie}) for p in paths))

    return asyncio.get_event_loop().run_until_complete(go())


def test_a_page_load_of_assets_asks_the_server_once(guarded):
    """JupyterLab asks for ~60 guarded assets at once: one api/me for all of them."""
    loop, guard = guarded
    asyncio.set_event_loop(loop)
    paths = [PREFIX + f"static/lab/{i}.js" for i in range(40)]
    answers = _many(guard, paths, SESSION)
    assert [r.code for r in answers] == [200] * 40
    assert Me.asked == 1 and guard.checks.asked == 1
    # control: other cookies are other checks (and a forged one is refused, not carried along)
    forged = _many(guard, paths[:10], "jupyterhub-user-alice-cardio=forged")
    assert {r.code for r in forged} == {403} and Me.asked == 2
    assert all(r.headers["X-Havre-Refused"] == "login" for r in forged)


def test_a_yes_is_reused_one_second_at_most(guarded, monkeypatch):
    """A sign-out reaches static assets after SIGN_IN_REUSE_SECONDS, as it reaches the server."""
    import spawner.download_guard as dg

    loop, guard = guarded
    asyncio.set_event_loop(loop)
    path = PREFIX + "static/lab/main.js"
    now = [1000.0]
    monkeypatch.setattr(dg, "_clock", lambda: now[0])
    assert _many(guard, [path], SESSION)[0].code == 200
    Me.signed_out = True
    now[0] += dg.SIGN_IN_REUSE_SECONDS / 2
    assert _many(guard, [path], SESSION)[0].code == 200 and Me.asked == 1  # reused
    now[0] += dg.SIGN_IN_REUSE_SECONDS
    refused = _many(guard, [path], SESSION)[0]
    assert refused.code == 403 and refused.headers["X-Havre-Refused"] == "login"
    assert Me.asked == 2


def test_a_failed_or_refused_check_is_never_reused(guarded):
    loop, guard = guarded
    asyncio.set_event_loop(loop)
    path = PREFIX + "static/lab/main.js"
    Me.failing = 2  # the server can't tell twice in a row: refused
    assert _many(guard, [path], SESSION)[0].code == 403 and Me.asked == 2
    assert _many(guard, [path], SESSION)[0].code == 200 and Me.asked == 3  # asked again
    Me.signed_out = True
    guard.checks.forget(PREFIX)
    assert _many(guard, [path], SESSION)[0].code == 403 and Me.asked == 4  # a no: no retry
    assert _many(guard, [path], SESSION)[0].code == 403 and Me.asked == 5  # not reused


def test_a_server_that_fails_one_check_under_load_still_serves_the_page(guarded):
    """A 502 from api/me (the server's own check with a busy hub failed) once: the theme's
    stylesheet and the rest of the page's assets still load (asked once more, shared)."""
    loop, guard = guarded
    asyncio.set_event_loop(loop)
    Me.failing = 1
    paths = [PREFIX + "static/lab/theme.css"] + [PREFIX + f"static/lab/{i}.js" for i in range(9)]
    assert [r.code for r in _many(guard, paths, SESSION)] == [200] * 10
    assert Me.asked == 2


def test_a_restarted_server_is_asked_again(guarded):
    loop, guard = guarded
    asyncio.set_event_loop(loop)
    path = PREFIX + "static/lab/main.js"
    assert _many(guard, [path], SESSION)[0].code == 200
    target = guard.routes.lookup(PREFIX)[1]
    guard.routes.unregister(PREFIX)
    guard.routes.register(PREFIX, target)
    Me.signed_out = True  # the new server doesn't know the old session
    assert _many(guard, [path], SESSION)[0].code == 403 and Me.asked == 2
