"""The notebook server locked down from the inside, attacked through the real proxy and guard.

Carol (a researcher) attacks her own diabetes server as a researcher with bad intent would:

* **every route** the server registers, enumerated from the server itself at test time (a
  script run in her container builds the server as ``jupyterhub-singleuser`` does and lists
  its tornado rules), is requested with every method its handler has: directly at the
  container from inside the enclave with her session (the control: what the server itself
  answers), then through the proxy and the download guard with her session and without one.
  The set of (handler, method) pairs the guard lets through must equal the reviewed list below,
  so a new extension can't add a route the guard passes silently; without a session, no route
  gives anything but a refusal or a redirect to the hub's login (``api`` excepted: the
  server's version, which the hub reads after a spawn, and nothing else);
* **files planted in her home** (a ``jupyter_server_config.py`` that runs code and adds
  ``/data`` as a static path, a kernelspec folder whose "logo" is the data file), then a server
  restart by the hub: the planted code doesn't run and nothing planted is served. The control
  is a deliberately unlocked server (a plain ``jupyter server`` started in the same container
  without Havre's pinned environment): it runs the code and hands out ``/data`` with no login;
* **the server's own API token**, read in a notebook, replayed from outside the enclave (this
  test process) as an ``Authorization`` header, a bearer token and a ``?token=`` parameter:
  refused at the edge; the control is the same token used inside the enclave (from the hub's
  container, straight to the server), where it still works.

Each row goes into a table printed at the end of the module (exit, control, result), as the
isolation probe table does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from spawner.download_policy import Login, check_request

pytestmark = pytest.mark.docker

PROJECT = "diabetes"
PREFIX = f"/user/carol/{PROJECT}/"
KERNEL_ID = str(uuid.UUID(int=0x5EED))
#: (exit, control, result) rows, printed at the end of the module
LOCKDOWN_TABLE: list[tuple[str, str, str]] = []

#: Builds the server as jupyterhub-singleuser does (the JupyterHub extension, with every server
#: extension the image enables) without starting it, and lists its routes.
ENUMERATE_ROUTES = r"""
import contextlib, io, json, logging
logging.disable(logging.CRITICAL)
from tornado import web, websocket
from tornado.routing import RuleRouter
from jupyterhub.singleuser.extension import JupyterHubSingleUser
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    app = JupyterHubSingleUser.initialize_server(
        argv=["--ServerApp.port=0", "--ServerApp.open_browser=False"]
    )
routes = []
def walk(router):
    for rule in router.rules:
        target = rule.target
        if isinstance(target, RuleRouter):
            walk(target)
            continue
        regex = getattr(rule.matcher, "regex", None)
        if regex is None or not isinstance(target, type):
            continue
        methods = sorted(
            m.upper() for m in ("get", "head", "post", "put", "patch", "delete", "options")
            if getattr(target, m, None) is not getattr(web.RequestHandler, m)
        )
        routes.append({
            "pattern": regex.pattern,
            "handler": f"{target.__module__}.{target.__qualname__}",
            "methods": methods,
            "websocket": issubclass(target, websocket.WebSocketHandler),
        })
walk(app.web_app.default_router)
print("ROUTES " + json.dumps(routes))
"""

#: Requests sent from the hub's container straight to the notebook container (no proxy, no
#: guard): what the server itself answers, inside the enclave.
DIRECT_REQUESTS = r"""
import http.client, json, sys
host, port, batch = json.loads(sys.argv[1])
answers = []
for method, path, headers in batch:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        text = body[:200000].decode("utf-8", "replace")
        answers.append({"status": response.status, "body": text})
    except OSError as err:
        answers.append({"status": 0, "body": repr(err)})
    finally:
        connection.close()
print("ANSWERS " + json.dumps(answers))
"""

#: A deliberately unlocked server in the same container: a plain `jupyter server` started
#: without Havre's pinned environment (Jupyter's defaults: config and data in the home).
UNLOCKED_SERVER = r"""
import json, os, subprocess, sys, time, urllib.error, urllib.request
env = {k: v for k, v in os.environ.items()
       if not k.startswith(("JUPYTER", "JPY_")) and k != "PYTHONNOUSERSITE"}
env["JUPYTER_RUNTIME_DIR"] = "/tmp/unlocked-runtime"
server = subprocess.Popen(
    ["jupyter", "server", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=8899",
     "--IdentityProvider.token=unlocked", "--ServerApp.open_browser=False",
     "--ServerApp.root_dir=" + os.environ["HOME"]],
    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
def get(path, token=False):
    url = "http://127.0.0.1:8899/" + path + ("?token=unlocked" if token else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return {"status": response.status, "body": response.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as err:
        return {"status": err.code, "body": ""}
    except OSError as err:
        return {"status": 0, "body": repr(err)}
try:
    deadline = time.monotonic() + 60
    while get("api/status", token=True)["status"] != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    answers = {name: get(path, token) for name, path, token in json.loads(sys.argv[1])}
finally:
    server.terminate()
    server.wait(20)
print("ANSWERS " + json.dumps(answers))
"""

#: What carol plants in her home (run in her kernel): code in the server's config, /data as
#: a static path, and a kernelspec whose "logo" is the data file.
PLANT = r"""
import json, pathlib, shutil
home = pathlib.Path.home()
(home / ".jupyter").mkdir(exist_ok=True)
(home / ".jupyter" / "jupyter_server_config.py").write_text(
    "import pathlib\n"
    "pathlib.Path.home().joinpath('lockdown-config-ran').write_text('code ran in the server')\n"
    "c.ServerApp.extra_static_paths = ['/data']\n"
    "c.ServerApp.allow_unauthenticated_access = True\n"
)
(home / ".jupyter" / "jupyter_server_config.json").write_text(
    json.dumps({"ServerApp": {"extra_static_paths": ["/data"]}})
)
spec = home / ".local" / "share" / "jupyter" / "kernels" / "leak"
spec.mkdir(parents=True, exist_ok=True)
(spec / "kernel.json").write_text(json.dumps(
    {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
     "display_name": "leak", "language": "python"}
))
shutil.copyfile("/data/hospital_stays.csv", spec / "logo-64x64.png")
shutil.copyfile("/data/hospital_stays.csv", spec / "hospital_stays.csv")
(home / "lockdown-config-ran").unlink(missing_ok=True)
print(open("/data/hospital_stays.csv").read().splitlines()[1])
"""

#: The (handler, method) pairs the guard lets through, reviewed one by one: what JupyterLab
#: needs. A route or method added by a new extension that the guard would pass fails the test
#: until someone adds it here (and to the allow-list's reasons in spawner/download_policy.py).
REVIEWED_ALLOWED = {
    ("jupyter_server.base.handlers.RedirectWithParams", "GET"),
    ("jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler", "GET"),
    ("jupyterhub.singleuser.extension.JupyterHubLogoutHandler", "GET"),
    ("jupyterlab_server.handlers.LabHandler", "GET"),
    ("jupyter_server.base.handlers.FileFindHandler", "GET"),
    ("jupyter_server.base.handlers.FileFindHandler", "HEAD"),
    ("jupyterlab_server.themes_handler.ThemesHandler", "GET"),
    ("jupyterlab_server.themes_handler.ThemesHandler", "HEAD"),
    ("jupyterlab_server.settings_handler.SettingsHandler", "GET"),
    ("jupyterlab_server.settings_handler.SettingsHandler", "PUT"),
    ("jupyterlab_server.workspaces_handler.WorkspacesHandler", "GET"),
    ("jupyterlab_server.workspaces_handler.WorkspacesHandler", "PUT"),
    ("jupyterlab_server.workspaces_handler.WorkspacesHandler", "DELETE"),
    ("jupyterlab_server.translations_handler.TranslationsHandler", "GET"),
    ("jupyterlab_server.listings_handler.ListingsHandler", "GET"),
    ("jupyterlab_server.licenses_handler.LicensesHandler", "GET"),
    ("jupyterlab.handlers.extension_manager_handler.ExtensionHandler", "GET"),
    ("jupyterlab.handlers.plugin_manager_handler.PluginHandler", "GET"),
    ("jupyterlab.handlers.build_handler.BuildHandler", "GET"),
    ("jupyterlab.handlers.announcements.NewsHandler", "GET"),
    ("jupyterlab.handlers.announcements.CheckForUpdateHandler", "GET"),
    ("jupyter_server.base.handlers.APIVersionHandler", "GET"),
    ("jupyter_server.services.api.handlers.APIStatusHandler", "GET"),
    ("jupyter_server.services.api.handlers.IdentityHandler", "GET"),
    ("jupyter_server.services.api.handlers.PathResolverHandler", "GET"),
    ("jupyter_server.services.config.handlers.ConfigHandler", "GET"),
    ("jupyter_server.services.contents.handlers.ContentsHandler", "GET"),
    ("jupyter_server.services.contents.handlers.ContentsHandler", "PUT"),
    ("jupyter_server.services.contents.handlers.ContentsHandler", "PATCH"),
    ("jupyter_server.services.contents.handlers.ContentsHandler", "POST"),
    ("jupyter_server.services.contents.handlers.ContentsHandler", "DELETE"),
    ("jupyter_server.services.contents.handlers.CheckpointsHandler", "GET"),
    ("jupyter_server.services.contents.handlers.CheckpointsHandler", "POST"),
    ("jupyter_server.services.contents.handlers.ModifyCheckpointsHandler", "POST"),
    ("jupyter_server.services.contents.handlers.ModifyCheckpointsHandler", "DELETE"),
    ("jupyter_server.services.contents.handlers.TrustNotebooksHandler", "POST"),
    ("jupyter_server.services.nbconvert.handlers.NbconvertRootHandler", "GET"),
    ("jupyter_server.services.kernels.handlers.MainKernelHandler", "GET"),
    ("jupyter_server.services.kernels.handlers.MainKernelHandler", "POST"),
    ("jupyter_server.services.kernels.handlers.KernelHandler", "GET"),
    ("jupyter_server.services.kernels.handlers.KernelHandler", "DELETE"),
    ("jupyter_server.services.kernels.handlers.KernelActionHandler", "POST"),
    ("jupyter_server.services.kernels.websocket.KernelWebsocketHandler", "GET"),
    ("jupyter_server.services.sessions.handlers.SessionRootHandler", "GET"),
    ("jupyter_server.services.sessions.handlers.SessionRootHandler", "POST"),
    ("jupyter_server.services.sessions.handlers.SessionHandler", "GET"),
    ("jupyter_server.services.sessions.handlers.SessionHandler", "PATCH"),
    ("jupyter_server.services.sessions.handlers.SessionHandler", "DELETE"),
    ("jupyter_server.services.kernelspecs.handlers.MainKernelSpecHandler", "GET"),
    ("jupyter_server.services.kernelspecs.handlers.KernelSpecHandler", "GET"),
    ("jupyter_server_terminals.api_handlers.TerminalRootHandler", "GET"),
    ("jupyter_server_terminals.api_handlers.TerminalRootHandler", "POST"),
    ("jupyter_server_terminals.api_handlers.TerminalHandler", "GET"),
    ("jupyter_server_terminals.api_handlers.TerminalHandler", "DELETE"),
    ("jupyter_server_terminals.handlers.TermSocket", "GET"),
    ("jupyter_server.services.events.handlers.SubscribeWebsocket", "GET"),
    ("jupyter_server.services.security.handlers.CSPReportHandler", "POST"),
}
#: the kernelspec resource route is allowed for the standard logo names only (a sample
#: with another file name is refused; tested with a logo name in its own row below)
KERNELSPEC_LOGO = "kernelspecs/python3/logo-64x64.png"

#: regex pieces of the registered routes -> a sample value (first match wins)
SAMPLES = [
    (r"(?P<mode>lab|doc)(?P<workspace>/workspaces/[a-zA-Z0-9\-\_]+)?(?P<tree>/tree/.*)?", "lab"),
    (r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)", KERNEL_ID),
    (r"(?P<session_id>\w+-\w+-\w+-\w+-\w+)", KERNEL_ID),
    (r"(?P<path>(?:(?:/[^/]+)+|/?))", "/lockdown-probe.txt"),
    (r"(?P<checkpoint_id>[\w-]+)", "checkpoint"),
    (r"(?P<section_name>\w+)", "notebook"),
    (r"(?P<kernel_name>[\w\.\-%]+)/(?P<path>.*)", "python3/kernel.json"),
    (r"(?P<kernel_name>[\w\.\-%]+)", "python3"),
    (r"(?P<format>\w+)", "html"),
    (r"(?P<action>restart|interrupt)", "interrupt"),
    (r"(?P<schema_name>.+)", "@jupyterlab/apputils-extension:themes"),
    (r"(?P<space_name>.+)", "lockdown-probe"),
    (r"(?P<locale>.*)", "en"),
    (r"(robots\.txt|favicon\.ico)", "favicon.ico"),
    (r"(\w+)", "1"),
    (r"/?(.*)", "/lockdown-probe"),
    (r"(.*)", "lockdown-probe"),
    (r".*/", "lockdown-probe/"),
    (r".*", "lockdown-probe"),
    (r"/?", ""),
    (r"\.", "."),
]


def sample_path(pattern: str) -> str | None:
    """A path inside the server that ``pattern`` (a registered route) matches, or None when
    the pattern is not under the server's prefix (unreachable through the proxy)."""
    body = pattern.removesuffix("$")
    if not body.startswith(PREFIX.rstrip("/")):
        return None
    body = body[len(PREFIX.rstrip("/")) :]
    for piece, sample in SAMPLES:
        body = body.replace(piece, sample)
    body = body.lstrip("/")
    assert not re.search(r"[()\[\]?*+\\|]", body), (
        f"route {pattern!r} has a part the test can't sample ({body!r}): add it to SAMPLES"
    )
    assert re.fullmatch(pattern, PREFIX + body), (pattern, body)
    return body


def record(exit_: str, control: str, result: str) -> None:
    LOCKDOWN_TABLE.append((exit_, control, result))


@pytest.fixture(scope="module", autouse=True)
def print_lockdown_table(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not LOCKDOWN_TABLE:
        return
    with capture.global_and_fixture_disabled():  # printed whether the tests pass or fail
        reporter.write_line("")
        reporter.section("notebook server lockdown")
        reporter.write_line(f"{'exit':<58} {'control':<40} result")
        for exit_, control, result in LOCKDOWN_TABLE:
            reporter.write_line(f"{exit_:<58} {control:<40} {result}")


@pytest.fixture(scope="module")
def carol(enclave):
    """Carol's running diabetes server (restarted by one test; stopped at the end)."""
    carol = enclave.user("carol")
    r = carol.start_server(PROJECT)
    assert r.status_code in (201, 202), r.text
    carol.wait_ready(PROJECT)
    carol.open_server(PROJECT)
    yield carol
    carol.stop_server(PROJECT)


def server_container(enclave):
    container = enclave.notebook_container("carol", PROJECT)
    assert container is not None
    container.reload()
    return container


def container_address(container) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert len(networks) == 1, networks  # its project network only
    return next(iter(networks.values()))["IPAddress"]


def cookie_header(user) -> str:
    """The cookies a browser sends to carol's server (the hub's and the server's, not the
    hub's own XSRF cookie, whose path is /hub/)."""
    return "; ".join(
        f"{c.name}={c.value}"
        for c in user.session.cookies
        if PREFIX.startswith((c.path or "/").rstrip("/") + "/")
    )


def xsrf(user) -> str:
    return user.session.cookies.get("_xsrf", path=PREFIX) or ""


def direct(enclave, requests_: list[tuple[str, str, dict]]) -> list[dict]:
    """Send requests from the hub's container straight to carol's container (no guard)."""
    address = container_address(server_container(enclave))
    batch = json.dumps([address, 8888, requests_])
    result = enclave.hub_container().exec_run(["python3", "-c", DIRECT_REQUESTS, batch])
    text = result.output.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("ANSWERS ")), None)
    assert result.exit_code == 0 and line is not None, text[-2000:]
    return json.loads(line[len("ANSWERS ") :])


def through_guard(user, method: str, path: str, cookies: str, ws: bool) -> tuple[int, str, str]:
    """(status, X-Havre-Refused, Location) of one request through the proxy and the guard."""
    url = user.server_url(PROJECT, path)
    headers = {"Cookie": cookies} if cookies else {}
    if ws:
        return websocket_handshake(url, headers)
    if cookies and method not in ("GET", "HEAD"):
        headers["X-XSRFToken"] = xsrf(user)
    body = b"{" if method in ("POST", "PUT", "PATCH") else None  # invalid JSON: no side effect
    r = requests.request(method, url, headers=headers, data=body, allow_redirects=False, timeout=30)
    return r.status_code, r.headers.get("X-Havre-Refused", ""), r.headers.get("Location", "")


def websocket_handshake(url: str, headers: dict) -> tuple[int, str, str]:
    """(status, X-Havre-Refused, Location) of a websocket upgrade request (no redirect
    followed, no cookie but the ones given)."""
    parts = urlsplit(url)
    lines = [
        f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
        "",
        "",
    ]
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in head[1:])}
    return status, fields.get("x-havre-refused", ""), fields.get("location", "")


def enumerated_routes(enclave) -> list[dict]:
    result = server_container(enclave).exec_run(["python", "-c", ENUMERATE_ROUTES])
    text = result.output.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("ROUTES ")), None)
    assert result.exit_code == 0 and line is not None, text[-3000:]
    return json.loads(line[len("ROUTES ") :])


def test_every_registered_route_is_on_the_reviewed_list_or_refused_and_needs_a_login(
    enclave, carol
):
    routes = enumerated_routes(enclave)
    assert len(routes) > 40, routes  # the server, its extensions, JupyterHub's extension
    cookies = cookie_header(carol)
    cases = []
    allowed_pairs = set()
    for route in routes:
        path = sample_path(route["pattern"])
        if path is None:
            continue
        for method in route["methods"] or ["GET"]:
            refusal, allowed = check_request(method, path, "", websocket=route["websocket"])
            if allowed is not None:
                allowed_pairs.add((route["handler"], method))
            cases.append((route, method, path, allowed))
    unreviewed = allowed_pairs - REVIEWED_ALLOWED
    assert not unreviewed, f"the guard lets through routes nobody reviewed: {sorted(unreviewed)}"
    missing = REVIEWED_ALLOWED - allowed_pairs
    assert not missing, f"reviewed routes the server no longer has or the guard refuses: {missing}"
    logo = check_request("GET", KERNELSPEC_LOGO, "")[1]
    assert logo is not None  # the one file name of a kernelspec folder the guard passes
    cases.append(({"handler": "kernelspec logo", "websocket": False}, "GET", KERNELSPEC_LOGO, logo))

    controls = direct(
        enclave,
        [
            (method, PREFIX + path, {"Cookie": cookies})
            for route, method, path, _allowed in cases
            if method in ("GET", "HEAD") and not route["websocket"]
        ],
    )
    control_answers = iter(controls)
    failures = []
    for route, method, path, allowed in cases:
        ws = route["websocket"]
        if method in ("GET", "HEAD") and not ws:
            control = f"direct: {next(control_answers)['status']}"
        else:
            control = "direct: not sent (not a read)" if not ws else "direct: websocket"
        with_session = through_guard(carol, method, path, cookies, ws)
        without = through_guard(carol, method, path, "", ws)
        status, refused, _ = with_session
        if allowed is not None:
            sign_in = allowed.login is Login.SIGN_IN
            if refused and not (sign_in and refused == "sign-in"):
                failures.append(f"{method} {path}: allowed, but the guard refused it ({refused})")
        elif status != 403 or not refused:
            failures.append(f"{method} {path}: not allowed, yet the guard answered {status}")
        status0, refused0, location0 = without
        redirect_to_login = 300 <= status0 < 400 and (
            location0.startswith("/hub/") or location0.startswith(PREFIX + "lab")
        )
        version_only = (
            allowed is not None
            and allowed.login is Login.VERSION
            and set(requests.get(carol.server_url(PROJECT, path), timeout=30).json()) == {"version"}
        )  # the hub reads the server's version after a spawn: that string and nothing else
        if not (status0 >= 400 or redirect_to_login or version_only):
            failures.append(f"{method} {path}: without a session the answer was {status0}")
        record(
            f"{method} {path or '/'}"[:58],
            control,
            f"session: {status}{' ' + refused if refused else ''}; "
            f"none: {status0}{' ' + refused0 if refused0 else ''}",
        )
    assert not failures, "\n".join(failures)


def test_static_files_need_a_login_though_the_server_serves_them_to_anyone(enclave, carol):
    path = "static/favicons/favicon.ico"
    control = direct(enclave, [("GET", PREFIX + path, {})])[0]
    assert control["status"] == 200  # the server itself asks no login for static files
    signed_in = requests.get(
        carol.server_url(PROJECT, path), headers={"Cookie": cookie_header(carol)}, timeout=30
    )
    assert signed_in.status_code == 200
    anonymous = requests.get(carol.server_url(PROJECT, path), timeout=30)
    assert anonymous.status_code == 403 and anonymous.headers["X-Havre-Refused"] == "login"
    assert "Sign in first" in anonymous.text
    record("static file without a login", "direct, no cookie: 200", "guard, no cookie: 403 login")


def test_the_servers_own_token_works_inside_the_enclave_and_is_refused_from_outside(enclave, carol):
    out = carol.run_code(PROJECT, "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])")
    assert out["error"] is None, out
    token = out["stdout"].strip()
    assert re.fullmatch(r"[0-9a-f]{32,}", token), out
    control = direct(
        enclave, [("GET", PREFIX + "api/contents", {"Authorization": f"token {token}"})]
    )[0]
    assert control["status"] == 200 and '"type": "directory"' in control["body"]
    url = carol.server_url(PROJECT, "api/contents")
    for how, kwargs in [
        ("Authorization: token", {"headers": {"Authorization": f"token {token}"}}),
        ("Authorization: Bearer", {"headers": {"Authorization": f"Bearer {token}"}}),
        ("?token=", {"params": {"token": token}}),
    ]:
        r = requests.get(url, timeout=30, allow_redirects=False, **kwargs)
        assert r.status_code == 403 and r.headers["X-Havre-Refused"] == "token", (how, r.text)
        assert '"type": "directory"' not in r.text
        assert "sign in" in r.json()["message"]
        record(
            f"server token from outside ({how})", "inside, direct: 200", f"{r.status_code} token"
        )
    # a browser gets no token to replay: JupyterLab's page carries none, and uses its cookie
    lab = carol.session.get(carol.server_url(PROJECT, "lab"), timeout=30)
    config = json.loads(
        re.search(
            r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
            lab.text,
            re.S,
        ).group(1)
    )
    assert config.get("token") == ""
    listing = carol.session.get(
        url, headers={"X-XSRFToken": xsrf(carol)}, timeout=30, allow_redirects=False
    )
    assert listing.status_code == 200 and listing.json()["type"] == "directory"
    record("token in JupyterLab's page", "session cookie: 200", "page token: empty")


def test_config_kernelspecs_and_static_paths_planted_in_the_home_are_ignored(enclave, carol):
    out = carol.run_code(PROJECT, PLANT)
    assert out["error"] is None, out
    secret_row = out["stdout"].strip()
    assert secret_row.count(",") >= 3, out

    # the hub restarts the server (and manages it through the guard: start, check, stop)
    carol.stop_server(PROJECT)
    assert enclave.wait_container_gone("carol", PROJECT)
    r = carol.start_server(PROJECT)
    assert r.status_code in (201, 202), r.text
    carol.wait_ready(PROJECT)
    carol.open_server(PROJECT)
    record("hub stops, starts, checks the server", "-", "ready behind the guard")
    container = server_container(enclave)
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["JUPYTER_CONFIG_DIR"] == "/opt/havre/jupyter/config"
    assert env["JUPYTER_DATA_DIR"] == "/opt/havre/jupyter/data"
    assert env["JUPYTER_PATH"] == "" and env["JUPYTER_CONFIG_PATH"] == ""

    ran = carol.run_code(
        PROJECT,
        "import pathlib; print(pathlib.Path.home().joinpath('lockdown-config-ran').exists())",
    )
    assert ran["stdout"].strip() == "False", ran  # the planted config's code did not run
    cookies = cookie_header(carol)
    static = requests.get(
        carol.server_url(PROJECT, "static/hospital_stays.csv"),
        headers={"Cookie": cookies},
        timeout=30,
    )
    assert static.status_code == 404 and secret_row not in static.text
    anonymous = requests.get(carol.server_url(PROJECT, "static/hospital_stays.csv"), timeout=30)
    assert anonymous.status_code == 403 and secret_row not in anonymous.text
    specs = carol.session.get(carol.server_url(PROJECT, "api/kernelspecs"), timeout=30).json()
    assert "leak" not in specs["kernelspecs"] and "python3" in specs["kernelspecs"]
    logo = requests.get(
        carol.server_url(PROJECT, "kernelspecs/leak/logo-64x64.png"),
        headers={"Cookie": cookies},
        timeout=30,
    )
    assert logo.status_code == 404 and secret_row not in logo.text
    raw = requests.get(
        carol.server_url(PROJECT, "kernelspecs/leak/hospital_stays.csv"),
        headers={"Cookie": cookies},
        timeout=30,
    )
    assert raw.status_code == 403 and raw.headers["X-Havre-Refused"] == "not-allowed"
    # and the server itself, behind no guard, doesn't serve them either
    inside = direct(
        enclave,
        [
            ("GET", PREFIX + "static/hospital_stays.csv", {}),
            ("GET", PREFIX + "kernelspecs/leak/logo-64x64.png", {"Cookie": cookies}),
        ],
    )
    assert [a["status"] for a in inside] == [404, 404]
    assert all(secret_row not in a["body"] for a in inside)

    # the control: a deliberately unlocked server in the same container, same home
    probes = [
        ("static", "static/hospital_stays.csv", False),
        ("logo", "kernelspecs/leak/logo-64x64.png", True),
        ("kernelspecs", "api/kernelspecs", True),
    ]
    result = container.exec_run(["python", "-c", UNLOCKED_SERVER, json.dumps(probes)])
    text = result.output.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("ANSWERS ")), None)
    assert result.exit_code == 0 and line is not None, text[-2000:]
    unlocked = json.loads(line[len("ANSWERS ") :])
    assert unlocked["static"]["status"] == 200 and secret_row in unlocked["static"]["body"]
    assert unlocked["logo"]["status"] == 200 and secret_row in unlocked["logo"]["body"]
    assert '"leak"' in unlocked["kernelspecs"]["body"]
    control_ran = carol.run_code(
        PROJECT,
        "import pathlib; print(pathlib.Path.home().joinpath('lockdown-config-ran').exists())",
    )
    assert control_ran["stdout"].strip() == "True", control_ran
    record(
        "~/.jupyter config (code in the server)",
        "unlocked: code ran",
        "Havre: not run (config dir pinned)",
    )
    record(
        "~/.jupyter static path /data, no login",
        f"unlocked: {unlocked['static']['status']} + data",
        f"Havre: {static.status_code} (session), {anonymous.status_code} (none)",
    )
    record(
        "~/.local kernelspec 'logo' = data file",
        f"unlocked: {unlocked['logo']['status']} + data",
        f"Havre: {logo.status_code}, not listed; other files {raw.status_code}",
    )
    cleanup = carol.run_code(
        PROJECT,
        "import pathlib, shutil; h = pathlib.Path.home()\n"
        "shutil.rmtree(h / '.jupyter', ignore_errors=True)\n"
        "shutil.rmtree(h / '.local/share/jupyter/kernels/leak', ignore_errors=True)\n"
        "(h / 'lockdown-config-ran').unlink(missing_ok=True)\n",
    )
    assert cleanup["error"] is None, cleanup
