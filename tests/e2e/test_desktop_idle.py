"""Idle desktops are culled by the researcher's input only (issue #17).

The desktop's own Chromium keeps polling the notebook server's API, so the server's activity
(what the hub's idle culler reads) never ages. The desktop therefore counts only keyboard and
mouse events arriving over VNC (Xvnc's ``MaxIdleTime``, set from ``culling.idle_seconds`` by
the broker's ``desktop_spec``): after that long without any, it stops, and the broker's
``server.inspect`` (what the hub's poll reads) reports the pair stopped, so the hub removes
both containers.

Two real pairs (the broker's own specs and ``Broker._create_and_start``, the stand-in server
of tests/e2e/test_desktop_pixels.py) with ``idle_seconds`` of a few seconds:

* untouched: the desktop exits 0 saying why, and the pair is reported stopped;
* control: a VNC client inside the other desktop (its Unix socket, where websockify sends the
  researcher's noVNC input) presses a key every second for longer than ``idle_seconds``
  twice over: that desktop is still running afterwards.
"""

from __future__ import annotations

import dataclasses
import time

import docker
import pytest

from havre.broker.policy import check_request, desktop_spec, server_spec
from havre.broker.service import AuditLog, Broker
from havre.enclave.config import parse_enclave_config
from tests.e2e.test_desktop_pixels import (
    DESKTOP_IMAGE,
    ENCLAVE,
    NOTEBOOK_IMAGE,
    STANDIN,
    TOKEN,
    _wait_for,
)

IDLE_SECONDS = 6
KEY_SECONDS = 3 * IDLE_SECONDS

#: a VNC client on the desktop's Unix socket: no authentication (the socket is the desktop
#: user's only), a shift key pressed and released every second for KEY_SECONDS
KEYS = f"""
import socket, struct, time
s = socket.socket(socket.AF_UNIX)
for _ in range(100):
    try:
        s.connect("/tmp/desktop/vnc.sock"); break
    except OSError:
        time.sleep(0.1)
s.recv(12); s.sendall(b"RFB 003.008\\n")
n = s.recv(1)[0]; s.recv(n); s.sendall(b"\\x01")
assert s.recv(4) == b"\\0\\0\\0\\0"
s.sendall(b"\\x01")
head = s.recv(24); s.recv(struct.unpack(">I", head[20:24])[0])
end = time.monotonic() + {KEY_SECONDS}
while time.monotonic() < end:
    for down in (1, 0):
        s.sendall(struct.pack(">BBxxI", 4, down, 0xFFE1))
    time.sleep(1)
print("keys sent", flush=True)
"""


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    try:
        client = docker.APIClient(version="auto", timeout=120)
        client.ping()
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"needs a running Docker engine (scripts/run-tests.sh starts one): {err}")
    for image in (DESKTOP_IMAGE, NOTEBOOK_IMAGE):
        try:
            client.inspect_image(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"needs image {image}: build it with `bash images/build.sh`")
    state = tmp_path_factory.mktemp("desktop-idle")
    enclave = parse_enclave_config(
        {
            "enclave": {"name": ENCLAVE + "i", "state_dir": str(state)},
            "images": {"allowed": [NOTEBOOK_IMAGE], "desktop": DESKTOP_IMAGE},
            "culling": {"idle_seconds": IDLE_SECONDS},
            "projects": {
                "renal": {"title": "Renal", "members": ["alice", "bob"], "access": "desktop"}
            },
        }
    )
    broker = Broker(enclave, {}, AuditLog(state / "audit.jsonl"), client)
    made: list[str] = []
    requests = {}
    try:
        for user in ("alice", "bob"):
            prefix = f"/user/{user}/renal/"  # (the stand-in only has to listen)
            env = {
                "JUPYTERHUB_API_TOKEN": TOKEN,
                "JUPYTERHUB_SERVICE_PREFIX": prefix,
                "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:8888{prefix}",
            }
            request = check_request(
                enclave, "hub", "server.start", {"user": user, "project": "renal", "env": env}
            )
            notebook = server_spec(enclave, request, identity=(2000001, 2000000))
            # no network at all: the pair needs only its own loopback here
            notebook = dataclasses.replace(
                notebook,
                command=("/opt/havre/venv/bin/python", "-c", STANDIN),
                mounts=(),
                host_config=dict(notebook.host_config, network_mode="none"),
                network="none",
            )
            desktop = desktop_spec(enclave, request, notebook=notebook.name)
            for name in (desktop.name, notebook.name):
                broker.remove(name)
            made += [desktop.name, notebook.name]
            broker._create_and_start(notebook, NOTEBOOK_IMAGE)
            broker._create_and_start(desktop, DESKTOP_IMAGE)
            requests[user] = (request, desktop.name)
        yield client, enclave, broker, requests
    finally:
        for name in made:
            try:
                print(f"--- {name}\n{client.logs(name, tail=20).decode(errors='replace')}")
            except docker.errors.NotFound:
                pass
            broker.remove(name)


def test_an_untouched_desktop_stops_and_a_typed_in_one_does_not(pairs):
    client, enclave, broker, requests = pairs
    busy_request, busy = requests["bob"]
    keys = client.exec_create(busy, ["python3", "-c", KEYS])["Id"]
    client.exec_start(keys, detach=True)
    started = time.monotonic()

    idle_request, idle = requests["alice"]
    _wait_for(
        "the untouched desktop stops",
        lambda: not client.inspect_container(idle)["State"]["Running"],
        deadline=IDLE_SECONDS + 60,
    )
    state = client.inspect_container(idle)["State"]
    log = client.logs(idle, tail=20).decode(errors="replace")
    assert state["ExitCode"] == 0, log
    assert f"no keyboard or mouse input for {IDLE_SECONDS} s" in log
    # what the hub's poll reads: the pair is stopped (the hub then stops both containers)
    assert broker.inspect_server(enclave, idle_request)["state"] == "exited"

    # control: the desktop receiving keystrokes outlives idle_seconds more than twice over
    _wait_for(
        "the keystrokes end",
        lambda: not client.exec_inspect(keys)["Running"],
        deadline=KEY_SECONDS + 60,
    )
    assert client.exec_inspect(keys)["ExitCode"] == 0
    assert time.monotonic() - started >= KEY_SECONDS
    assert client.inspect_container(busy)["State"]["Running"], client.logs(busy, tail=20)
    assert broker.inspect_server(enclave, busy_request)["state"] == "running"
