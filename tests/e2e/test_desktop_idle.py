"""Idle desktops are culled by the researcher's input only (issue #17).

The desktop's own Chromium keeps polling the notebook server's API, so the server's activity
(what the hub's idle culler reads) never ages. The desktop therefore counts only keyboard and
mouse events arriving over VNC (Xvnc's ``MaxIdleTime``, set from ``culling.idle_seconds`` by
the broker's ``desktop_spec``): after that long without any, it stops, the broker's
``server.inspect`` (what the hub's poll reads) reports the pair stopped, and the hub stops the
server, which removes both containers.

Through the real enclave (tests/enclave_fixtures.py): dora's ``renal`` server (pixels only)
started while the published enclave config says ``culling.idle_seconds`` of a few seconds
(the broker reads it live; the config is put back once the server runs):

* control: a VNC client inside the desktop (its Unix socket, where websockify sends the
  researcher's noVNC input) presses a key every second for three times ``idle_seconds``: the
  pair still runs and the hub shows the server ready;
* then untouched: the hub shows the server stopped, and neither the desktop nor its notebook
  container is left.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker

from havre.enclave.live import publish_config
from tests.e2e.test_desktop_pixels import _wait_for

IDLE_SECONDS = 10
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


def _containers(enclave) -> dict[str, str]:
    """dora's renal containers that exist: name -> state."""
    names = (
        enclave.config.desktop_container_name("renal", "dora"),
        enclave.config.container_name("renal", "dora"),
    )
    found = {}
    for name in names:
        try:
            found[name] = enclave.docker.containers.get(name).status
        except docker.errors.NotFound:
            pass
    return found


def test_through_the_hub_an_idle_desktop_pair_is_culled_and_one_typed_in_is_not(enclave):
    source = Path(enclave.config.source)
    original = source.read_text()
    dora = enclave.user("dora")
    try:
        source.write_text(original + f"culling:\n  idle_seconds: {IDLE_SECONDS}\n")
        publish_config(enclave.config)
        r = dora.start_server("renal")
        assert r.status_code in (201, 202), r.text
        # control: keystrokes over VNC from the desktop's start (Xvnc times idleness from its
        # own start), for three times idle_seconds, keep the pair running
        name = enclave.config.desktop_container_name("renal", "dora")
        _wait_for("dora's desktop runs", lambda: _containers(enclave).get(name) == "running")
        api = enclave.docker.api
        keys = api.exec_create(name, ["python3", "-c", KEYS])["Id"]
        api.exec_start(keys, detach=True)
        started = time.monotonic()
        dora.wait_ready("renal")
        source.write_text(original)
        publish_config(enclave.config)
        desktop = enclave.docker.containers.get(name)
        assert f"HAVRE_DESKTOP_IDLE_SECONDS={IDLE_SECONDS}" in desktop.attrs["Config"]["Env"]
        _wait_for("the keystrokes end", lambda: not api.exec_inspect(keys)["Running"], 90)
        assert api.exec_inspect(keys)["ExitCode"] == 0
        assert time.monotonic() - started >= KEY_SECONDS
        assert set(_containers(enclave).values()) == {"running"}, _containers(enclave)
        assert len(_containers(enclave)) == 2
        assert (dora.server_model("renal") or {}).get("ready"), dora.server_model("renal")

        # untouched from now on: culled through the hub, both containers removed
        _wait_for(
            "the hub shows dora's renal server stopped",
            lambda: dora.server_model("renal") is None,
            deadline=IDLE_SECONDS + 90,
        )
        left = _containers(enclave)
        try:  # (ProjectSpawner.poll removes a pair it finds stopped)
            _wait_for("no container of the pair is left", lambda: not _containers(enclave), 30)
        except AssertionError as err:
            raise AssertionError(f"{err}; when the hub showed it stopped: {left}") from None
    finally:
        if source.read_text() != original:
            source.write_text(original)
            publish_config(enclave.config)
        if dora.server_model("renal") is not None:
            dora.stop_server("renal")
