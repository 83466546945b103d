"""Download exits, attacked with a real researcher session through the real proxy and guard.

With alice's valid session cookies (the same a browser holds), every route that hands raw files
to a browser is refused by the hub-side download guard, however it is spelt; the same session
still reads the file through JupyterLab's contents API (so the refusal is the guard's, not a
missing login), runs code over the kernel websocket, and gets the notebook
Content-Security-Policy. A notebook container can't reach the guard, and the spawn page gets the
spawner's progress messages.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from havre.enclave.ports import GUARD_PORT
from havre.host.layout import hub_container_name

pytestmark = pytest.mark.docker

SECRET = "patient_id,diagnosis\n4711,rare condition\n"
FILE = "outputs/guard-probe.csv"
NOTEBOOK = "guard-probe.ipynb"

#: (route inside the server, what the guard says): every way to get the file to a browser
DOWNLOAD_ROUTES = [
    (f"files/{FILE}", "route-files"),
    (f"files/{FILE}?download=1", "route-files"),
    (f"%66iles/{FILE}", "route-files"),
    (f"FILES/{FILE}", "route-files"),
    (f"lab/../files/{FILE}", "route-files"),
    (f"api/contents/{FILE}?download=1", "download-parameter"),
    (f"api/contents/{FILE}?content=1&download=true", "download-parameter"),
    (f"nbconvert/html/{NOTEBOOK}?download=true", "route-nbconvert"),
    (f"nbconvert/script/{NOTEBOOK}", "route-nbconvert"),
    (f"nbconvert/asciidoc/{NOTEBOOK}", "route-nbconvert"),
    (f"view/{FILE}", "route-view"),
]


@pytest.fixture(scope="module")
def probe_files(alice_cardio):
    alice, _container = alice_cardio
    code = (
        "import json, nbformat\n"
        f"open({FILE!r}, 'w').write({SECRET!r})\n"
        "nb = nbformat.v4.new_notebook()\n"
        f"nb.cells.append(nbformat.v4.new_code_cell({f'print({SECRET!r})'!r}))\n"
        f"nbformat.write(nb, {NOTEBOOK!r})\n"
    )
    out = alice.run_code("cardio", code)
    assert out["error"] is None, out
    return alice


@pytest.mark.parametrize(("route", "code"), DOWNLOAD_ROUTES)
def test_every_download_route_is_refused_with_a_valid_session(probe_files, route, code):
    alice = probe_files
    r = alice.session.get(alice.server_url("cardio", route), timeout=30, allow_redirects=False)
    assert r.status_code == 403, (route, r.status_code, r.text[:300])
    assert r.headers.get("X-Havre-Refused") == code
    assert "4711" not in r.text and "rare condition" not in r.text
    assert "release" in r.text  # the page says what to do instead
    assert "Content-Disposition" not in r.headers


def test_the_same_session_reads_files_through_jupyterlab_and_runs_kernels(probe_files):
    alice = probe_files
    r = alice.session.get(
        alice.server_url("cardio", f"api/contents/{FILE}"),
        params={"content": "1", "format": "text", "type": "file"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["content"] == SECRET  # JupyterLab keeps working
    csp = r.headers["Content-Security-Policy"]
    own = alice.server_url("cardio", "")  # scripts talk to this server's own path only
    assert f"connect-src {own}" in csp and "default-src 'self'" in csp, csp
    lab = alice.session.get(alice.server_url("cardio", "lab"), timeout=30)
    assert lab.status_code == 200 and f"connect-src {own}" in lab.headers["Content-Security-Policy"]
    out = alice.run_code("cardio", "print(6 * 7)")  # a kernel over the websocket, via the guard
    assert out == {"stdout": "42\n", "stderr": "", "error": None}


def test_a_notebook_container_cannot_reach_the_guard(enclave, alice_cardio):
    """The guard listens on the hub container's loopback: from a project network, nothing."""
    alice, _container = alice_cardio
    hub = hub_container_name(enclave.config)
    code = (
        "import socket\n"
        f"for port in ({GUARD_PORT}, 8000, 8081):\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        "    try:\n"
        f"        s.connect(({hub!r}, port)); print(port, 'open')\n"
        "    except OSError as err:\n"
        "        print(port, 'closed', type(err).__name__)\n"
        "    finally:\n"
        "        s.close()\n"
    )
    out = alice.run_code("cardio", code)
    assert out["error"] is None, out
    assert f"{GUARD_PORT} closed" in out["stdout"], out
    assert "8000 closed" in out["stdout"], out
    assert "8081 open" in out["stdout"], out  # control: the hub's API is there, by that name


def test_the_hub_routes_servers_through_the_guard(enclave, alice_cardio):
    """The proxy's route for alice's server points at the guard, not at the container."""
    hub = enclave.hub_container()
    token_cmd = (
        'python3 -c "import urllib.request, json, os;'
        "t=open(os.environ['HAVRE_STATE'] + '/secrets/proxy-auth-token').read().strip();"
        "r=urllib.request.Request('http://127.0.0.1:8001/api/routes',"
        "headers={'Authorization': 'token ' + t});"
        'print(urllib.request.urlopen(r).read().decode())"'
    )
    result = hub.exec_run(
        ["sh", "-c", token_cmd], environment={"HAVRE_STATE": str(enclave.config.state_dir)}
    )
    assert result.exit_code == 0, result.output
    routes = json.loads(result.output)
    target = routes["/user/alice/cardio"]["target"]
    assert target == f"http://127.0.0.1:{GUARD_PORT}", routes


def read_progress(user, project: str) -> list[dict]:
    """The events of one read of the hub's progress stream for a server."""
    events: list[dict] = []
    with user.session.get(
        user.url(f"hub/api/users/{user.name}/servers/{project}/progress"),
        headers={"Accept": "text/event-stream", **user._api_headers()},
        stream=True,
        timeout=60,
    ) as stream:
        if stream.status_code != 200:
            return events
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    return events


def test_spawn_progress_messages_reach_the_spawn_page(enclave):
    """The hub's progress stream (what the spawn page shows) carries the spawner's messages."""
    starter, watcher = enclave.user("bob"), enclave.user("bob")
    started: dict[str, object] = {}
    thread = threading.Thread(target=lambda: started.update(r=starter.start_server("diabetes")))
    thread.start()
    messages: list[str] = []
    try:
        for _attempt in range(40):  # the spawn takes a second or two; watch while it runs
            events = read_progress(watcher, "diabetes")
            messages = [event.get("message", "") for event in events]
            if len(events) > 1 or (events and not events[-1].get("ready")):
                break
            if events and events[-1].get("ready"):
                pytest.fail(f"the spawn finished before its progress could be read: {events}")
            time.sleep(0.05)
    finally:
        thread.join(timeout=120)
        starter.wait_ready("diabetes")
        starter.stop_server("diabetes")
    assert started["r"].status_code in (201, 202), started["r"].text
    text = " | ".join(messages)
    assert "member of project 'diabetes'" in text, text
    assert "closed network" in text, text
    assert "download guard" in text, text


def test_after_a_hub_crash_servers_run_on_behind_the_guard(enclave, probe_files):
    """The hub is killed and started again: alice's server is still running, still reached
    through the guard (whose routes the new hub rebuilt from the spawner's state), and the
    download routes are still refused."""
    alice = probe_files
    container = enclave.notebook_container("alice", "cardio")
    hub = enclave.hub_container()
    hub.kill()
    hub.start()
    deadline = time.monotonic() + 90
    while True:
        try:
            if alice.session.get(alice.url("hub/health"), timeout=5).status_code == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, hub.logs(tail=40).decode(errors="replace")
        time.sleep(0.5)
    container.reload()
    assert container.status == "running"  # not stopped by the hub's restart
    assert enclave.notebook_container("alice", "cardio").id == container.id
    out = alice.run_code("cardio", f"print(open({FILE!r}).read())")
    assert out["error"] is None and "rare condition" in out["stdout"], out
    refused = alice.session.get(alice.url(f"user/alice/cardio/files/{FILE}"), timeout=30)
    assert refused.status_code == 403 and "rare condition" not in refused.text
