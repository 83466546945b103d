"""Docker Engine starts with the daemon.json the Docker host role writes, and applies it.

The Ansible role merges Havre's settings into the operator's ``/etc/docker/daemon.json``
(``ansible/roles/havre_docker_host/templates/daemon.json.j2``). Applying it to the machine's
engine would restart the engine every other run shares, so the test starts a second engine
of its own: the machine's ``dockerd`` binary with the merged file as ``--config-file``, its own
data, exec root, socket and containerd namespace, in a network namespace of its own (``icc:
false`` needs iptables, and its rules and bridge stay in that namespace). The same engine
refuses a file with a misspelt key (the control: the test would see a file the engine rejects).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_ansible_daemon_json import OPERATOR, merged

pytestmark = pytest.mark.docker

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"


class Engine:
    """A dockerd started by the test in network namespace ``netns``; stopped by its pid. Its
    data root comes from the config (dockerd refuses a key given both as flag and in file)."""

    def __init__(self, root: Path, netns: str, config: dict) -> None:
        self.root = root
        self.socket = root / "d.sock"
        self.config_file = root / "daemon.json"
        self.config_file.write_text(json.dumps(config))
        self.log = root / "dockerd.log"
        ns = f"k{secrets.token_hex(4)}"
        command = [
            "nsenter",
            f"--net=/var/run/netns/{netns}",
            DOCKERD,
            "--config-file",
            str(self.config_file),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            f"unix://{self.socket}",
            "--containerd-namespace",
            ns,
            "--containerd-plugins-namespace",
            f"{ns}-plugins",
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def wait(self, seconds: float = 60) -> dict | None:
        """``docker info`` of the engine once it answers; None if it exited first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return None
            if self.socket.exists():
                info = subprocess.run(
                    ["docker", "-H", f"unix://{self.socket}", "info", "--format", "{{json .}}"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if info.returncode == 0:
                    return json.loads(info.stdout)
            time.sleep(0.5)
        raise AssertionError(f"dockerd neither answered nor exited: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or not Path(DOCKERD).exists() or not shutil.which("nsenter"):
        pytest.skip("a second Docker engine needs root, dockerd and nsenter")
    name = f"havre-k{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def engine_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="havre-k-"))  # short: the socket's path has a limit
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_engine_runs_with_the_merged_daemon_json(netns, engine_root):
    config = merged(OPERATOR | {"data-root": str(engine_root / "data")})
    engine = Engine(engine_root, netns, config)
    try:
        info = engine.wait()
        assert info is not None, engine.log.read_text()[-3000:]
        assert info["LiveRestoreEnabled"] is False  # the operator's choice, kept
        assert info["LoggingDriver"] == "json-file"
        assert info["DockerRootDir"] == str(engine_root / "data")
    finally:
        engine.stop()
    # Havre's defaults where the operator's file is empty
    defaults = merged({"data-root": str(engine_root / "data")})
    assert defaults["live-restore"] is True and defaults["icc"] is False
    engine = Engine(engine_root, netns, defaults)
    try:
        info = engine.wait()
        assert info is not None, engine.log.read_text()[-3000:]
        assert info["LiveRestoreEnabled"] is True
    finally:
        engine.stop()


def test_the_engine_refuses_a_misspelt_key(netns, engine_root):
    """The control: a file the engine doesn't accept is seen as such."""
    config = merged({"data-root": str(engine_root / "data")})
    config["no-new-privilege"] = config.pop("no-new-privileges")
    engine = Engine(engine_root, netns, config)
    try:
        assert engine.wait() is None
        assert "no-new-privilege" in engine.log.read_text()
    finally:
        engine.stop()
