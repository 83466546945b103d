"""A remote desktop's own seccomp profile and limits, proven by attack (issue #17).

Three real desktops (the real image running ``havre-desktop``: Xvnc, the window manager and
websockify start; no notebook server, no network), each made by the broker's own code
(``Broker._create_and_start``) from the policy's ``desktop_spec`` for a real config; the
probes run inside them (``docker exec``: the container's seccomp profile and cgroup):

* the seccomp probe table of tests/integration/test_seccomp.py: every call the notebook
  profile refuses gets EPERM in a desktop; the positive control, a desktop of the same spec
  differing only in Docker's default profile, reaches the kernel with the same probes
  (io_uring, ptrace, AF_VSOCK, uevent and sock_diag netlink, keyctl); what ordinary programs
  need works in both;
* ``desktop_limits``: a project with ``memory: 256M`` gets that limit (``docker inspect``) and a
  hog of 384 MiB in its desktop is killed by the kernel; control: the same hog in the desktop
  of a project with ``memory: 1G`` (a per-project override) finishes;
* ``desktop_paste``: a paste (an RFB ClientCutText, as noVNC sends it, through the RFB relay's
  socket where websockify sends the browser's input) into the desktop of a project that
  allows none is dropped by the relay (its ``desktop.paste_refused`` line on the container's
  log, with the SHA-256 and never the text) and Xvnc's clipboard stays empty, also when sent
  to Xvnc's own socket behind the relay; control: the same paste into the desktop of a
  project with ``desktop_paste: inbound-text`` is in Xvnc's clipboard (read as an X client)
  with its ``desktop.paste`` line. A message no VNC client sends closes the connection.

That the whole desktop (Xvnc, nginx, websockify, Chromium showing JupyterLab) works under the
profile is tests/e2e/test_desktop_pixels.py and test_desktop_session.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
from pathlib import Path

import pytest

from havre import __version__
from havre.broker.policy import check_request, desktop_spec
from havre.broker.service import AuditLog, Broker
from havre.enclave.config import parse_enclave_config
from havre.enclave.seccomp import desktop_profile
from tests.docker_engine import engine_with_images
from tests.integration.test_seccomp import (
    MUST_FAIL,
    MUST_WORK,
    PROBE,
    REACHES_THE_KERNEL,
    parse,
)

#: what Docker's default profile (20.10) lets through to the kernel: the desktop's own profile
#: is what stops these (the rest of REACHES_THE_KERNEL, Docker's default refuses as well)
UNDER_DOCKERS_DEFAULT = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ptrace",
    "socket(AF_VSOCK)",
    "socket(NETLINK_KOBJECT_UEVENT)",
    "socket(NETLINK_SOCK_DIAG)",
)

pytestmark = pytest.mark.docker

ENCLAVE = os.environ.get("HAVRE_TEST_ENCLAVE", "havretest") + "dhd"
DESKTOP_IMAGE = f"havre/desktop:{__version__}"
TOKEN = "d17h" + "0123456789abcdef" * 2
#: a hog of this many MiB, touched page by page: over the small project's limit, well under
#: the large one's
HOG_MIB = 384
HOG = f"""
block = bytearray({HOG_MIB} * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("HOG-DONE", flush=True)
"""


@pytest.fixture(scope="module")
def desktops(tmp_path_factory):
    client = engine_with_images(DESKTOP_IMAGE)
    state = tmp_path_factory.mktemp("desktop-hardening")
    enclave = parse_enclave_config(
        {
            "enclave": {"name": ENCLAVE, "state_dir": str(state)},
            "images": {"desktop": DESKTOP_IMAGE},
            "desktop_limits": {"memory": "256M", "pids": 128},
            "projects": {
                "renal": {"title": "Renal", "members": ["alice", "bob"], "access": "desktop"},
                "hepato": {
                    "title": "Hepato",
                    "members": ["alice", "bob"],
                    "access": "desktop",
                    "desktop_limits": {"memory": "1G"},
                    "desktop_paste": "inbound-text",
                },
            },
        }
    )
    broker = Broker(enclave, {}, AuditLog(state / "audit.jsonl"), client)

    def spec(user: str, project: str):
        prefix = f"/user/{user}/{project}/"
        env = {"JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_SERVICE_PREFIX": prefix}
        request = check_request(
            enclave, "hub", "server.start", {"user": user, "project": project, "env": env}
        )
        made = desktop_spec(enclave, request, notebook="unused")
        return dataclasses.replace(
            made, host_config=dict(made.host_config, network_mode="none"), network="none"
        )

    def without_havres_profile(desktop, security_opt: list[str]):
        return dataclasses.replace(
            desktop, host_config=dict(desktop.host_config, security_opt=security_opt)
        )

    renal, hepato = spec("alice", "renal"), spec("alice", "hepato")
    # the controls: bob's desktops, differing only in the seccomp profile: Docker's default,
    # and none (what the kernel itself does)
    control = without_havres_profile(spec("bob", "renal"), ["no-new-privileges:true"])
    unconfined = without_havres_profile(
        spec("bob", "hepato"), ["no-new-privileges:true", "seccomp=unconfined"]
    )
    made = {
        "renal": renal.name,
        "hepato": hepato.name,
        "control": control.name,
        "unconfined": unconfined.name,
    }
    try:
        for desktop in (renal, hepato, control, unconfined):
            broker.remove(desktop.name)
            broker._create_and_start(desktop, DESKTOP_IMAGE)
        yield client, made
    finally:
        for name in made.values():
            broker.remove(name)


def _exec(client, name: str, code: str) -> tuple[int, str]:
    """``python3 -c code`` inside container ``name``: its exit code and output."""
    run = client.exec_create(name, ["python3", "-c", code])["Id"]
    out = client.exec_start(run).decode(errors="replace")
    return client.exec_inspect(run)["ExitCode"], out


@pytest.fixture(scope="module")
def probed(desktops) -> dict[str, dict[str, str]]:
    client, made = desktops
    return {
        which: parse(_exec(client, made[which], PROBE)[1].encode())
        for which in ("renal", "control", "unconfined")
    }


def test_the_desktop_runs_havres_desktop_profile(desktops):
    client, made = desktops
    attrs = client.inspect_container(made["renal"])
    (given,) = [o for o in attrs["HostConfig"]["SecurityOpt"] if o.startswith("seccomp=")]
    assert json.loads(given.removeprefix("seccomp=")) == desktop_profile()
    assert attrs["State"]["Running"], client.logs(made["renal"], tail=20)
    _code, out = _exec(client, made["renal"], "print(open('/proc/1/status').read())")
    assert "Seccomp:\t2" in out  # filter mode, on the desktop's own process


#: a paste over VNC inside a desktop, then Xvnc's clipboard read as an X client
PASTE_PROBE = (Path(__file__).parent / "rfb_paste_probe.py").read_text()
RELAY_SOCKET = "/tmp/desktop/vnc.sock"  # websockify's target: the relay
XVNC_SOCKET = "/tmp/desktop/xvnc.sock"  # Xvnc's own, behind it


def _paste(client, name: str, socket_path: str, *args: str) -> dict:
    run = client.exec_create(name, ["python3", "-c", PASTE_PROBE, socket_path, *args])["Id"]
    out = client.exec_start(run).decode(errors="replace")
    assert client.exec_inspect(run)["ExitCode"] == 0, out
    return json.loads(out.strip().splitlines()[-1])


def _log_lines(client, name: str) -> tuple[str, list[dict]]:
    """The container's log (what the SIEM reads) and its JSON lines."""
    text = client.logs(name).decode(errors="replace")
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return text, lines


def test_a_paste_into_a_desktop_that_allows_none_is_refused_and_logged(desktops):
    client, made = desktops
    marker = "havre-paste-" + secrets.token_hex(8)
    # through the relay (where websockify sends noVNC's input): dropped, Xvnc holds nothing
    assert _paste(client, made["renal"], RELAY_SOCKET, marker) == {"owner": 0, "text": None}
    # and behind it, Xvnc's own setting (-AcceptCutText=0) drops it too
    direct = marker + "-direct"
    assert _paste(client, made["renal"], XVNC_SOCKET, direct) == {"owner": 0, "text": None}
    text, lines = _log_lines(client, made["renal"])
    sha = hashlib.sha256(marker.encode()).hexdigest()
    (line,) = [x for x in lines if x.get("sha256") == sha]
    assert line["event"] == "desktop.paste_refused" and line["level"] == "WARNING", line
    assert (line["user"], line["project"], line["service"]) == ("alice", "renal", "desktop")
    assert (line["reason"], line["characters"]) == ("paste-off", len(marker))
    assert marker not in text  # the text itself is never logged

    # control: the same paste into hepato's desktop (desktop_paste: inbound-text) arrives
    marker = "havre-paste-" + secrets.token_hex(8)
    result = _paste(client, made["hepato"], RELAY_SOCKET, marker)
    assert result["owner"] != 0 and result["text"] == marker, result
    text, lines = _log_lines(client, made["hepato"])
    sha = hashlib.sha256(marker.encode()).hexdigest()
    (line,) = [x for x in lines if x.get("sha256") == sha]
    assert line["event"] == "desktop.paste" and line["level"] == "INFO", line
    assert (line["user"], line["project"], line["characters"]) == ("alice", "hepato", len(marker))
    assert "reason" not in line and marker not in text


def test_the_relay_closes_a_connection_it_cannot_parse(desktops):
    client, made = desktops
    # (the probe's handshake through the relay succeeded first: valid input is forwarded)
    assert _paste(client, made["renal"], RELAY_SOCKET, "-", "--junk") == {"closed": True}
    _text, lines = _log_lines(client, made["renal"])
    refused = [x for x in lines if x.get("event") == "desktop.rfb_refused"]
    assert refused and refused[-1]["reason"] == "unknown client message type 7", refused


def test_each_call_the_profile_refuses_gets_eperm_in_a_desktop_not_under_dockers_default(probed):
    desktop, default, none = probed["renal"], probed["control"], probed["unconfined"]
    assert {name: desktop[name] for name in MUST_FAIL} == dict.fromkeys(MUST_FAIL, "EPERM")
    # the positive control: Docker's default profile, same spec otherwise, lets these through
    print("\nprobe | no profile | Docker's default | desktop")
    for name in desktop:
        print(f"{name} | {none[name]} | {default[name]} | {desktop[name]}")
    for name in UNDER_DOCKERS_DEFAULT:
        assert default[name] != "EPERM", (name, default)
    # and without any profile the rest reaches the kernel too: the EPERM is a profile's
    for name in REACHES_THE_KERNEL:
        assert none[name] != "EPERM", (name, none)
    for name in MUST_WORK:
        assert desktop[name] == default[name] == none[name] == "allowed", name


def test_a_desktop_gets_its_projects_memory_limit_and_a_hog_over_it_is_killed(desktops):
    client, made = desktops
    small = client.inspect_container(made["renal"])["HostConfig"]
    assert small["Memory"] == small["MemorySwap"] == 256 * 1024**2 and small["PidsLimit"] == 128
    code, out = _exec(client, made["renal"], HOG)
    assert code == 137 and "HOG-DONE" not in out, (code, out)  # SIGKILL from the OOM killer
    # control: the same hog under the other project's override (1G) finishes
    large = client.inspect_container(made["hepato"])["HostConfig"]
    assert large["Memory"] == 1024**3 and large["PidsLimit"] == 128
    code, out = _exec(client, made["hepato"], HOG)
    assert code == 0 and "HOG-DONE" in out, (code, out)
