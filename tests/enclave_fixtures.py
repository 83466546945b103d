"""Fixtures that run a real enclave: the Havre images on the real Docker engine (a plugin that
tests/conftest.py loads for the whole run).

The session fixture ``enclave`` writes the demo enclave under a name and state folder of its
own (so it never touches a locally running enclave), starts it with the same code as
``havre up``, and purges it at the end.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from havre.enclave.config import EnclaveConfig
from havre.host import layout, stack
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.demo import init_demo
from tests import web_coverage
from tests.integration.hub_client import HubUser

#: the test enclave's name; another one (HAVRE_TEST_ENCLAVE) keeps runs on a shared machine apart
ENCLAVE_NAME = os.environ.get("HAVRE_TEST_ENCLAVE", "havretest")
#: short, so that tests see a removed member's server stopped quickly
MEMBERSHIP_CHECK_SECONDS = 5


def _docker_or_skip() -> docker.DockerClient:
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"needs a running Docker engine (scripts/run-tests.sh starts one): {err}")
    for image in (DEFAULT_NOTEBOOK_IMAGE, layout.StackOptions().hub_image):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"needs image {image}: build it with `bash images/build.sh`")
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningEnclave:
    config: EnclaveConfig
    url: str
    passwords: dict[str, str]
    docker: docker.DockerClient
    options: layout.StackOptions

    def user(self, name: str) -> HubUser:
        return HubUser(self.url, name, self.passwords[name]).login()

    def notebook_container(self, username: str, project: str):
        found = self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"havre.enclave={self.config.name}",
                    f"havre.user={username}",
                    f"havre.project={project}",
                ]
            },
        )
        return found[0] if found else None

    def wait_container_gone(self, username: str, project: str, timeout: float = 30) -> bool:
        """Wait until the notebook container is removed (Docker removes it asynchronously)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.notebook_container(username, project) is None:
                return True
            time.sleep(0.3)
        return False

    def hub_container(self):
        return self.docker.containers.get(layout.hub_container_name(self.config))

    def egress_container(self):
        return self.docker.containers.get(layout.egress_container_name(self.config))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = _docker_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def enclave(docker_client, tmp_path_factory) -> Iterator[RunningEnclave]:
    state = tmp_path_factory.mktemp("enclave-state")
    config, users = init_demo(
        state,
        DEFAULT_NOTEBOOK_IMAGE,
        enclave_name=ENCLAVE_NAME,
        membership_check_seconds=MEMBERSHIP_CHECK_SECONDS,
    )
    stack.down(config, purge=False)  # leftovers of an interrupted run
    # HAVRE_TEST_HUB_IMAGE / HAVRE_TEST_EGRESS_IMAGE: a run's own builds (images/build.sh tags
    # are shared by everyone building on the machine)
    images = {
        field: os.environ[var]
        for field, var in (
            ("hub_image", "HAVRE_TEST_HUB_IMAGE"),
            ("egress_image", "HAVRE_TEST_EGRESS_IMAGE"),
        )
        if os.environ.get(var)
    }
    options = layout.StackOptions(port=free_port(), idp_port=free_port(), **images)
    url = stack.up(config, options)
    passwords = {u.name: u.password for u in users}
    running = RunningEnclave(config, url, passwords, docker_client, options)
    try:
        yield running
    finally:
        try:
            egress = docker_client.containers.get(layout.egress_container_name(config))
            web_coverage.collect(egress.logs().decode(errors="replace"))
        except docker.errors.NotFound:
            pass
        stack.down(config, purge=True)


@pytest.fixture(scope="session")
def alice_cardio(enclave) -> Iterator[tuple[HubUser, object]]:
    """Alice's running cardio server and its container (shared by read-only probes)."""
    alice = enclave.user("alice")
    r = alice.start_server("cardio")
    assert r.status_code in (201, 202), r.text
    alice.wait_ready("cardio")
    container = enclave.notebook_container("alice", "cardio")
    assert container is not None
    yield alice, container
    alice.stop_server("cardio")


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the isolation probe table (channel, control result, notebook result) and the
    restart table (component, how, time to recovery, what was kept)."""
    from tests.integration.test_isolation import PROBE_TABLE
    from tests.integration.test_no_routing import ROUTING_TABLE
    from tests.integration.test_restarts import print_restart_table
    from tests.integration.test_seccomp import SECCOMP_TABLE

    print_restart_table(terminalreporter.write_line)
    write = terminalreporter.write_line
    if SECCOMP_TABLE:
        terminalreporter.section("seccomp probes (same image, uid and capabilities)")
        write(f"{'system call':<31} {'control: Docker default':<24} {'no profile':<14} notebook")
        for call, default, unconfined, notebook in SECCOMP_TABLE:
            write(f"{call:<31} {default:<24} {unconfined:<14} {notebook}")
    if ROUTING_TABLE:
        terminalreporter.section("routing from project network A to B")
        write(f"{'through':<42} {'forwarding':<14} canary on B")
        for router, forwarding, seen in ROUTING_TABLE:
            write(f"{router:<42} {forwarding:<14} {seen}")
    from tests.integration.test_broker import BROKER_TABLE

    if BROKER_TABLE:
        terminalreporter.section("a compromised hub (docker exec -u 0) vs the unhardened copy")
        write(f"{'probe':<42} {'control: unhardened hub':<36} hub")
        for probe, control, result in BROKER_TABLE:
            write(f"{probe:<42} {control[:35]:<36} {result}")
    from tests.e2e.test_cross_project_browser import CROSS_PROJECT_TABLE

    if CROSS_PROJECT_TABLE:
        terminalreporter.section("one origin: a script in carol's cardio page (issue #12)")
        write(f"{'channel':<44} {'control':<48} result")
        for channel, control, result in CROSS_PROJECT_TABLE:
            write(f"{channel:<44} {control:<48} {result}")
    from tests.e2e.test_desktop_session import DESKTOP_PROBE_TABLE

    for table, title, column in (
        (PROBE_TABLE, "isolation probes", "notebook"),
        (DESKTOP_PROBE_TABLE, "isolation probes from a desktop container (issue #17)", "desktop"),
    ):
        if table:
            terminalreporter.section(title)
            write(f"{'channel':<40} {'control':<26} {column}")
            for channel, control, result in table:
                write(f"{channel:<40} {control:<26} {result}")
