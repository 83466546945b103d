"""The download guard's policy: the allow-list of notebook-server routes, and what is refused.

The integration tests attack the real guard in front of a real server
(tests/integration/test_download_guard.py, tests/integration/test_server_lockdown.py, which
enumerates the server's routes); these cover the spellings, methods, tokens and sign-in rules.
"""

from __future__ import annotations

import pytest

from spawner.download_policy import (
    ALLOWED_ROUTES,
    CONTENT_SECURITY_POLICY,
    CROSS_ORIGIN_OPENER_POLICY,
    Login,
    check_request,
    content_security_policy,
    normalised_path,
    response_refusal,
    server_sources,
)

KERNEL = "0f2c5a1e-8a3b-4c2d-9e1f-123456789abc"


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("files/outputs/t.csv", "", "route-files"),
        ("files/outputs/t.csv", "download=1", "route-files"),
        ("files", "", "route-files"),
        ("FILES/t.csv", "", "route-files"),
        ("%66iles/t.csv", "", "route-files"),
        ("%2566iles/t.csv", "", "route-files"),  # encoded twice
        ("/files/t.csv", "", "route-files"),  # a doubled slash after the prefix
        ("lab/../files/t.csv", "", "route-files"),
        ("./files/t.csv", "", "route-files"),
        ("nbconvert/html/analysis.ipynb", "download=true", "route-nbconvert"),
        ("nbconvert/script/analysis.ipynb", "", "route-nbconvert"),
        ("view/outputs/figure.html", "", "route-view"),
        ("api/contents/outputs/t.csv", "download=1", "download-parameter"),
        ("api/contents/outputs/t.csv", "content=1&Download=0", "download-parameter"),
        ("lab", "download", "download-parameter"),
        ("files%5ct.csv", "", "odd-path"),
        ("api/contents/a%00b", "", "odd-path"),
        ("%25252566iles/t.csv", "", "odd-path"),  # more decoding rounds than any client uses
    ],
)
def test_download_routes_are_refused_however_spelt(path, query, code):
    refusal, _route = check_request("GET", path, query)
    assert refusal is not None and refusal.code == code
    assert "release" in refusal.sentence


@pytest.mark.parametrize(
    ("method", "path", "query", "websocket"),
    [
        ("GET", "", "", False),
        ("GET", "lab", "", False),
        ("GET", "lab/", "", False),
        ("GET", "lab/tree/getting-started.ipynb", "", False),
        ("GET", "lab/workspaces/auto-x/tree/a%20b.ipynb", "", False),
        ("GET", "lab/api/settings/@jupyterlab/mainmenu-extension:plugin", "", False),
        ("PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes", "", False),
        ("PUT", "lab/api/workspaces/default", "", False),
        ("GET", "lab/api/translations/en", "", False),
        ("GET", "api/contents/outputs/t.csv", "content=1&format=text&type=file", False),
        ("PUT", "api/contents/analysis.ipynb", "", False),
        ("PATCH", "api/contents/old.ipynb", "", False),
        ("DELETE", "api/contents/old.ipynb", "", False),
        ("POST", "api/contents/analysis.ipynb/checkpoints", "", False),
        ("GET", "api/contents/files/t.csv", "", False),  # a folder named "files" in the home
        ("GET", "api/contents/outputs", "content=1", False),
        ("POST", "api/kernels", "", False),
        ("DELETE", f"api/kernels/{KERNEL}", "", False),
        ("POST", f"api/kernels/{KERNEL}/interrupt", "", False),
        ("GET", f"api/kernels/{KERNEL}/channels", f"session_id={KERNEL}", True),
        ("POST", "api/sessions", "", False),
        ("PATCH", f"api/sessions/{KERNEL}", "", False),
        ("GET", "api/kernelspecs", "", False),
        ("GET", "kernelspecs/python3/logo-64x64.png", "", False),
        ("GET", "kernelspecs/python3/logo-svg.svg", "", False),
        ("POST", "api/terminals", "", False),
        ("GET", "terminals/websocket/1", "", True),
        ("GET", "api/events/subscribe", "", True),
        ("GET", "api/nbconvert", "", False),  # the list of formats, no file
        ("GET", "static/lab/main.js", "v=1", False),
        ("HEAD", "static/lab/main.js", "", False),
        ("GET", "api/contents/outputs/downloads.csv", "", False),  # "download" in a name
        ("GET", "api/contents/outputs/token.csv", "", False),  # "token" in a name
        ("POST", "api/security/csp-report", "", False),
        ("GET", "oauth_callback", "code=abc&state=xyz", False),
    ],
)
def test_what_jupyterlab_needs_passes(method, path, query, websocket):
    refusal, route = check_request(method, path, query, websocket=websocket)
    assert refusal is None and route is not None, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "websocket"),
    [
        ("GET", "metrics", False),  # Prometheus metrics, no login
        ("POST", "api/shutdown", False),
        ("GET", "api/spec.yaml", False),
        ("PUT", "api/config/notebook", False),  # writes config
        ("PATCH", "api/config/notebook", False),
        ("POST", "lab/api/extensions", False),  # installs an extension
        ("POST", "lab/api/plugins", False),  # enables a locked plugin
        ("POST", "lab/api/build", False),
        ("GET", "kernelspecs/python3/kernel.json", False),  # raw files of a kernelspec folder
        ("GET", "kernelspecs/mine/data.csv", False),
        ("GET", "kernelspecs/mine/logo-64x64.png.csv", False),
        ("POST", "api/events", False),
        ("PATCH", "api/me", False),
        ("GET", "api/notebooks/t.csv", False),
        ("GET", "login", False),
        ("OPTIONS", "api/contents/t.csv", False),
        ("TRACE", "lab", False),
        ("GET", "some-new-extension/api/export", False),  # any route nobody reviewed
        ("GET", "static/../api/shutdown", False),  # dot segments inside an allowed route
        ("GET", "api/contents/a/%2e%2e/b.csv", False),
        ("GET", f"api/kernels/{KERNEL}/channels", False),  # a websocket route without upgrade
        ("GET", "api/contents/t.csv", True),  # an upgrade to a route that is not a websocket
        ("POST", "", False),
    ],
)
def test_everything_else_is_refused_with_a_sentence(method, path, websocket):
    refusal, route = check_request(method, path, "", websocket=websocket)
    assert route is None and refusal is not None, (method, path)
    assert refusal.code in ("not-allowed", "odd-path")
    assert refusal.sentence.endswith(".") and len(refusal.sentence.split()) > 8


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", [("Authorization", "token 0123456789abcdef")]),
        ("", [("authorization", "Bearer 0123456789abcdef")]),
        ("", [("Authorization", "Basic YWxpY2U6c2VjcmV0")]),
        ("token=0123456789abcdef", []),
        ("content=1&TOKEN=0123456789abcdef", []),
    ],
)
def test_a_token_is_refused_on_every_route(query, headers):
    for method, path in [("GET", "api/contents/outputs/t.csv"), ("GET", "lab"), ("GET", "")]:
        refusal, route = check_request(method, path, query, headers)
        assert route is None and refusal is not None and refusal.code == "token"
        assert "sign in" in refusal.sentence


def test_without_a_token_the_same_request_passes():
    refusal, route = check_request(
        "GET", "api/contents/outputs/t.csv", "", [("Cookie", "jupyterhub-session-id=x")]
    )
    assert refusal is None and route is not None and route.login is Login.SERVER


def test_routes_the_server_serves_without_login_are_checked_by_the_guard():
    guarded = {
        check_request("GET", path, "")[1].login
        for path in ("static/lab/main.js", "lab/extensions/x/static/a.js", "lab/api/licenses/")
    }
    assert guarded == {Login.GUARD}
    for path in ("", "oauth_callback", "logout"):
        assert check_request("GET", path, "")[1].login is Login.SIGN_IN
    # a sign-in step answers a redirect, nothing else
    route = check_request("GET", "", "")[1]
    assert response_refusal([("Location", "/user/alice/cardio/lab")], route, 302) is None
    refusal = response_refusal([("Content-Type", "text/csv")], route, 200)
    assert refusal is not None and refusal.code == "sign-in"
    # other routes keep any status
    lab = check_request("GET", "lab", "")[1]
    assert response_refusal([("Content-Type", "text/html")], lab, 200) is None


def test_the_version_route_gives_the_version_only():
    route = check_request("GET", "api", "")[1]
    assert route is not None and route.login is Login.VERSION  # the hub reads it, no login
    assert response_refusal([], route, 200, b'{"version": "2.21.1"}') is None
    for body in (b'{"version": "2.21.1", "data": "4711,rare"}', b"4711,rare", b"[]"):
        refusal = response_refusal([], route, 200, body)
        assert refusal is not None and refusal.code == "version", body


def test_every_allowed_route_has_methods_and_compiles():
    names = [route.name for route in ALLOWED_ROUTES]
    assert len(names) == len(set(names))
    for route in ALLOWED_ROUTES:
        assert route.methods and route.methods <= {"GET", "PUT", "PATCH", "POST", "DELETE"}
        assert not route.websocket or route.methods == {"GET"}


def test_an_answer_with_content_disposition_is_refused():
    assert response_refusal([("Content-Type", "text/csv")]) is None
    refusal = response_refusal([("content-disposition", 'attachment; filename="t.csv"')])
    assert refusal is not None and refusal.code == "attachment"


def test_normalised_path_undoes_dot_segments_and_slashes():
    assert normalised_path("a//b/./c/../d/") == "/a/b/d/"
    assert normalised_path("../../etc") == "/etc"


def test_scripts_may_talk_to_the_enclave_only():
    directives = dict(
        item.strip().split(" ", 1) for item in CONTENT_SECURITY_POLICY.split(";") if item.strip()
    )
    assert directives["connect-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert "http" not in CONTENT_SECURITY_POLICY and "*" not in CONTENT_SECURITY_POLICY


def _directives(policy: str) -> dict[str, str]:
    return dict(item.strip().split(" ", 1) for item in policy.split(";") if item.strip())


def test_a_server_page_talks_to_its_own_server_only():
    """Issue #12 item 3: every project server shares the hub's origin, so 'self' would let a
    page of carol's cardio server fetch from her diabetes server; the guard narrows it."""
    sources = server_sources("http", "127.0.0.1:8000", "/user/carol/cardio/")
    assert (
        sources == "http://127.0.0.1:8000/user/carol/cardio/ ws://127.0.0.1:8000/user/carol/cardio/"
    )
    policy = _directives(content_security_policy("/user/carol/cardio/api/x", sources))
    assert policy["connect-src"] == sources
    assert policy["frame-src"] == sources + " blob: data:"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["report-uri"] == "/user/carol/cardio/api/x"
    assert "'self'" not in policy["connect-src"] and "'self'" not in policy["frame-src"]


def test_behind_tls_the_sources_are_https_and_wss():
    sources = server_sources("HTTPS", "havre.example.org", "/user/carol/cardio/")
    assert sources.split() == [
        "https://havre.example.org/user/carol/cardio/",
        "wss://havre.example.org/user/carol/cardio/",
    ]


def test_a_prefix_is_written_with_one_canonical_encoding():
    # JupyterHub escapes names (carol@site -> carol%40site); the browser compares decoded paths
    sources = server_sources("http", "localhost:8000", "/user/carol%40site/cardio/")
    assert sources.split()[0] == "http://localhost:8000/user/carol%40site/cardio/"
    sources = server_sources("http", "localhost:8000", "/user/a;b,c/p/")
    assert ";" not in sources and "," not in sources


@pytest.mark.parametrize(
    ("scheme", "host"),
    [
        ("http", ""),
        ("http", "evil; script-src *"),
        ("http", "a b"),
        ("http", "host/path"),
        ("javascript", "localhost"),
        ("ftp", "localhost"),
    ],
)
def test_a_host_or_scheme_that_cannot_be_written_allows_nothing(scheme, host):
    assert server_sources(scheme, host, "/user/carol/cardio/") == "'none'"
    policy = _directives(content_security_policy("", server_sources(scheme, host, "/user/c/p/")))
    assert policy["connect-src"] == "'none'"
    assert policy["frame-src"] == "blob: data:"


def test_an_ipv6_host_is_written():
    assert server_sources("http", "[::1]:8000", "/user/c/p/").startswith("http://[::1]:8000/")


def test_a_prefix_must_start_and_end_with_a_slash():
    with pytest.raises(ValueError, match="starts and ends with '/'"):
        server_sources("http", "localhost", "user/c/p")


def test_no_page_of_the_enclave_may_be_framed_or_scripted_by_its_opener():
    assert _directives(CONTENT_SECURITY_POLICY)["frame-ancestors"] == "'none'"
    assert CROSS_ORIGIN_OPENER_POLICY == "noopener-allow-popups"
