"""The spawner's policy decisions, without Docker (the integration tests attack the real thing)."""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import os
import socketserver
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from jupyterhub.spawner import SpawnException

from havre.enclave.config import parse_enclave_config
from havre.enclave.networks import project_network_is_closed
from spawner.project_spawner import ProjectSpawner
from tests.unit.broker_enclave import NOTEBOOK_IMAGE, unit_config

CONFIG = unit_config(
    images={"default": NOTEBOOK_IMAGE},
    projects={"diabetes": {"title": "Diabetes", "members": ["bob", "carol"]}},
    output_checkers=["olivia"],
)


def make_spawner(username: str, server_name: str, config=CONFIG) -> ProjectSpawner:
    orm_spawner = SimpleNamespace(name=server_name, display_name=server_name, server=None)
    user = SimpleNamespace(name=username, url=f"/user/{username}/")
    spawner = ProjectSpawner(user=user, orm_spawner=orm_spawner)
    parse_enclave_config(config, source="unit")  # valid as given
    folder = Path(tempfile.mkdtemp(prefix="havre-unit-"))
    (folder / "enclave.yaml").write_text(yaml.safe_dump(config))
    spawner.enclave_config_path = str(folder / "enclave.yaml")  # read live, as in the hub
    return spawner


@pytest.mark.parametrize(
    ("user", "project", "allowed", "status"),
    [
        ("alice", "cardio", True, None),
        ("carol", "cardio", True, None),
        ("carol", "diabetes", True, None),
        ("bob", "diabetes", True, None),
        ("alice", "diabetes", False, 403),
        ("bob", "cardio", False, 403),
        ("olivia", "cardio", False, 403),  # a checker is not a member
        ("mallory", "cardio", False, 403),
        ("alice", "unknown", False, 403),  # no such project: same answer as non-member
        ("alice", "", False, 400),  # the default server has no project
    ],
)
def test_who_may_start_which_project(user, project, allowed, status, json_log):
    spawner = make_spawner(user, project)
    if allowed:
        assert spawner.authorize_project().slug == project
        assert json_log.events("spawn.refused") == []
    else:
        with pytest.raises(SpawnException) as info:
            spawner.authorize_project()
        assert info.value.status_code == status
        (logged,) = json_log.events("spawn.refused")  # the SIEM's line
        assert (logged["user"], logged["status"]) == (user, status)
        assert logged.get("project") == (project or None)


def test_unreadable_config_fails_closed(tmp_path):
    spawner = ProjectSpawner(
        user=SimpleNamespace(name="alice", url="/"),
        orm_spawner=SimpleNamespace(name="cardio", display_name="cardio", server=None),
    )
    spawner.enclave_config_path = str(tmp_path / "missing.yaml")
    with pytest.raises(SpawnException) as info:
        spawner.authorize_project()
    assert info.value.status_code == 503


def test_hardened_host_config_has_every_control():
    spawner = make_spawner("alice", "cardio")
    project = spawner.authorize_project()
    host = spawner.hardened_host_config(project)
    assert host["cap_drop"] == ["ALL"]
    assert host["security_opt"][0] == "no-new-privileges:true"
    assert host["security_opt"][1].startswith('seccomp={"archMap"')  # Havre's own profile
    assert host["read_only"] is True
    assert host["pids_limit"] == 300
    assert host["memswap_limit"] == 1024**3  # no swap beyond the memory limit
    assert host["dns"] == ["127.0.0.1"]  # with no network gateway known
    assert spawner.hardened_host_config(project, dns="10.9.0.1")["dns"] == ["10.9.0.1"]
    assert host["sysctls"]["net.ipv6.conf.all.disable_ipv6"] == "1"
    assert host["sysctls"]["net.ipv4.ping_group_range"] == "1 0"
    assert host["network_mode"] == "unit-project-cardio"
    assert "/tmp" in host["tmpfs"] and "nosuid" in host["tmpfs"]["/tmp"]


@pytest.mark.parametrize(
    ("attrs", "closed"),
    [
        ({"Internal": True, "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"}}, True),
        ({"Internal": False, "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"}}, False),
        ({"Internal": True, "Options": {}}, False),
        (
            {
                "Internal": True,
                "EnableIPv6": True,
                "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"},
            },
            False,
        ),
    ],
)
def test_an_existing_network_is_used_only_when_closed(attrs, closed):
    assert project_network_is_closed(attrs) is closed


def _rewrite(path: str, text: str, bump: int) -> None:
    Path(path).write_text(text)
    stat = Path(path).stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))


def test_poll_keeps_a_server_while_the_published_config_is_broken(json_log):
    """A broken config must neither stop running servers nor let new ones start; a member
    removed in a valid config is still stopped."""
    spawner = make_spawner("alice", "cardio")
    spawner.membership_check_interval = 1

    async def running() -> None:
        return None

    async def signed_in() -> bool:
        return True

    spawner.container_status = running  # the broker's answer: the container runs
    spawner.refresh_groups = signed_in  # the provider's answer: still signed in

    def poll() -> int | None:
        spawner._membership_checked_at = 0.0
        return asyncio.run(spawner.poll())

    assert poll() is None  # control: a member, config fine
    _rewrite(spawner.enclave_config_path, "projects: [broken", bump=1)
    assert poll() is None  # kept
    with pytest.raises(SpawnException):
        spawner.authorize_project()  # but no new server
    removed = copy.deepcopy(CONFIG)
    removed["projects"]["cardio"]["members"] = ["carol"]
    _rewrite(spawner.enclave_config_path, yaml.safe_dump(removed), bump=2)
    assert poll() == 0  # a removal in a valid config stops it
    (lost,) = json_log.events("membership.lost")  # the SIEM's line, for the stop only
    assert (lost["user"], lost["project"]) == ("alice", "cardio")


def test_a_stopped_desktop_pair_is_removed_by_the_poll_that_finds_it():
    """An idle desktop exits while its notebook server runs; JupyterHub calls ``stop`` only for
    a server it finds running, so the poll that finds the pair stopped removes it (the broker's
    ``server.stop``); control: a running pair, and a browser-tier server, are left alone."""
    config = copy.deepcopy(CONFIG)
    config["projects"]["renal"] = {"title": "Renal", "members": ["alice"], "access": "desktop"}
    calls: list[tuple[str, dict]] = []

    async def broker_call(action: str, **fields) -> dict:
        calls.append((action, fields))
        return {}

    for project, state, expected in (
        ("renal", 0, [("server.stop", {"user": "alice", "project": "renal"})]),
        ("renal", None, []),  # running
        ("cardio", 0, []),  # browser tier: JupyterHub's own handling, as before
    ):
        calls.clear()
        spawner = make_spawner("alice", project, config)
        spawner.membership_check_interval = 0

        async def status(state=state) -> int | None:
            return state

        spawner.container_status = status
        spawner.broker_call = broker_call
        assert asyncio.run(spawner.poll()) == state
        assert calls == expected, (project, state)


def test_a_spawn_page_opened_before_the_new_start_still_follows_it():
    # issue #20: Stop then Start; the spawn page's event stream may begin before start() has,
    # while the previous spawn's four messages are still kept. It must follow the new spawn.
    spawner = make_spawner("alice", "cardio")

    async def scenario() -> list[int]:
        spawner.begin_progress()  # the previous spawn
        for percent in (5, 20, 40, 70):
            spawner.report(percent, f"old {percent}")
        stream = spawner.progress()
        seen = [(await anext(stream))["progress"] for _ in range(4)]  # the old messages
        spawner.begin_progress()  # the new start()
        spawner.report(5, "new 5")
        seen.append((await asyncio.wait_for(anext(stream), timeout=10))["progress"])
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == [5, 20, 40, 70, 5]


class _HoldingBroker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A broker stand-in on a real Unix socket: every call is held until ``size`` calls are in
    flight at once (a barrier), then answered; a call that never sees the others is refused."""

    daemon_threads = True

    def __init__(self, path: str, size: int) -> None:
        self.barrier = threading.Barrier(size, timeout=20)
        self.in_flight = 0
        self.most_in_flight = 0
        self.count_lock = threading.Lock()
        super().__init__(path, _HoldingHandler)


class _HoldingHandler(http.server.BaseHTTPRequestHandler):
    server: _HoldingBroker
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        broker = self.server
        with broker.count_lock:
            broker.in_flight += 1
            broker.most_in_flight = max(broker.most_in_flight, broker.in_flight)
        try:
            broker.barrier.wait()
            status, answer = 200, {"state": "running", "id": "x"}
        except threading.BrokenBarrierError:
            status, answer = 409, {"error": "the calls came one batch after another"}
        with broker.count_lock:
            broker.in_flight -= 1
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_ten_spawners_call_the_broker_at_the_same_time(tmp_path):
    # issue #21: ten users pressing Start together must not queue in the hub. The broker
    # stand-in answers nobody until all ten calls are in flight at once; on asyncio's default
    # executor (6 threads on a 2-core hub) the seventh call waits for a free thread and the
    # barrier breaks.
    socket_path = str(tmp_path / "broker.sock")
    secret = tmp_path / "hub"
    secret.write_text("s3cret")
    broker = _HoldingBroker(socket_path, size=10)
    threading.Thread(target=broker.serve_forever, kwargs={"poll_interval": 0.05}).start()
    spawners = []
    for i in range(10):
        spawner = make_spawner(f"user{i}", "cardio")
        spawner.broker_socket, spawner.broker_secret_file = socket_path, str(secret)
        spawners.append(spawner)

    async def all_at_once() -> list[int | None]:
        return await asyncio.gather(*(s.container_status() for s in spawners))

    try:
        assert asyncio.run(all_at_once()) == [None] * 10  # all ten answered "running"
    finally:
        broker.shutdown()
        broker.server_close()
    assert broker.most_in_flight == 10
