"""Restarts disrupt nobody: each component restarted (SIGTERM) and crashed (SIGKILL) while two
researchers' servers run and a checker has the egress service open.

For every row: the component comes back by itself (Docker's restart policy, for a crash), the
two servers keep running and answer through the same browser sessions, the checker's and the
researcher's egress sessions keep working for a write without a new sign-in, and the time to
recovery is measured. The table is printed at the end of the run.

Also: while the identity provider is down (not restarting: stopped), running servers are kept
and the hub says why in its log; a new server is refused until the provider answers again; and
while the egress service is down, the page for it is Havre's "unavailable" page, not a bare 500.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from havre.host import layout, stack
from tests.integration.hub_client import HubUser
from tests.integration.test_egress_flow import Egress
from tests.integration.test_identity import Provider, new_user

pytestmark = pytest.mark.docker

#: (component, how, seconds to recovery, servers kept, sessions kept)
RESTART_TABLE: list[tuple[str, str, float, str, str]] = []


@pytest.fixture(scope="module")
def people(enclave):
    """Two researchers with running servers, and a checker with the egress service open."""
    provider = Provider(enclave)
    r1 = new_user(enclave, provider, "rst-one", ["project-cardio"]).login()
    r2 = new_user(enclave, provider, "rst-two", ["project-diabetes"]).login()
    for user, project in ((r1, "cardio"), (r2, "diabetes")):
        assert user.start_server(project).status_code in (201, 202)
    for user, project in ((r1, "cardio"), (r2, "diabetes")):
        user.wait_ready(project)
        user.open_server(project)
    checker = Egress(new_user(enclave, provider, "rst-checker", ["output-checkers"]).login())
    researcher = Egress(r1)
    yield {"servers": [(r1, "cardio"), (r2, "diabetes")], "checker": checker, "r1": researcher}
    for user, project in ((r1, "cardio"), (r2, "diabetes")):
        user.stop_server(project)


def container_for(enclave, component: str):
    names = {
        "hub": layout.hub_container_name,
        "egress": layout.egress_container_name,
        "idp": layout.idp_container_name,
        "runner": layout.runner_container_name,
        "broker": layout.broker_container_name,
    }
    return enclave.docker.containers.get(names[component](enclave.config))


def crash(container) -> None:
    """SIGKILL the container's main process from the host, as a crash or the OOM killer."""
    container.reload()
    os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)


def answers(enclave, component: str, people) -> bool:
    try:
        if component == "hub":
            return requests.get(f"{enclave.url}/hub/api/", timeout=5).status_code == 200
        if component == "idp":
            url = f"{enclave.options.idp_public_url}/.well-known/openid-configuration"
            return requests.get(url, timeout=5).status_code == 200
        if component == "egress":
            return people["checker"].call("GET", "api/whoami").status_code == 200
        if component == "broker":  # its socket answers with a refusal for no secret
            from havre.broker.client import BrokerClient, BrokerError

            path = enclave.config.state_dir / layout.BROKER_SOCKET_SUBDIR / "broker.sock"
            try:
                BrokerClient(path, timeout=5).raw("server.inspect", b"{}", secret="")
            except BrokerError as err:
                return err.status == 401
            return False
        if component == "runner":
            container = container_for(enclave, "runner")
            container.reload()
            return container.status == "running" and container.attrs["RestartCount"] >= 0
    except requests.RequestException:
        return False
    return False


def wait_recovered(enclave, component: str, people, started: float, timeout: float = 120):
    deadline = time.monotonic() + timeout
    time.sleep(0.5)  # let the signal land before the first probe
    while time.monotonic() < deadline:
        if answers(enclave, component, people):
            return time.monotonic() - started
        time.sleep(0.25)
    pytest.fail(f"{component} did not come back within {timeout:.0f} s")


def servers_answer(enclave, people) -> list[str]:
    """Problems with the two researchers' servers (empty: both run and answer)."""
    problems = []
    for user, project in people["servers"]:
        if enclave.notebook_container(user.name, project) is None:
            problems.append(f"{user.name}/{project}: container gone")
            continue
        r = user.session.get(user.server_url(project, "api/status"), timeout=30)
        if r.status_code != 200:
            problems.append(f"{user.name}/{project}: api/status {r.status_code}")
    return problems


def sessions_write(people, tag: str) -> list[str]:
    """A write through each egress session (no new sign-in); problems, if any."""
    problems = []
    r = people["r1"].call("POST", "api/requests", json={"project": "cardio", "title": tag})
    if r.status_code != 201:
        problems.append(f"researcher's write: {r.status_code} {r.text[:200]}")
    else:
        listed = people["r1"].call("GET", "api/requests?limit=500").json()
        same = [q for q in listed if q.get("title") == tag]
        if len(same) != 1:
            problems.append(f"researcher's write stored {len(same)} times")
    r = people["checker"].call("GET", "api/requests?limit=5")
    if r.status_code != 200:
        problems.append(f"checker's read: {r.status_code}")
    return problems


@pytest.mark.parametrize(
    ("component", "how"),
    [
        ("idp", "restart"),
        ("idp", "SIGKILL"),
        ("egress", "restart"),
        ("egress", "SIGKILL"),
        ("hub", "restart"),
        ("hub", "SIGKILL"),
        ("runner", "restart"),
        # servers keep running while the broker restarts; a spawn meanwhile is refused with a
        # sentence (tests/integration/test_broker.py)
        ("broker", "restart"),
        ("broker", "SIGKILL"),
    ],
)
def test_a_restart_keeps_servers_and_sessions(enclave, people, component, how):
    assert not servers_answer(enclave, people)  # control: all well before
    assert not sessions_write(people, f"before {component} {how}")
    container = container_for(enclave, component)
    started = time.monotonic()
    if how == "restart":
        container.restart(timeout=20)
    else:
        crash(container)
    recovered = wait_recovered(enclave, component, people, started)
    if component == "idp":
        # several membership checks (every 5 s in tests) run against the restarted provider
        time.sleep(3 * 5 + 2)
    problems = servers_answer(enclave, people)
    write_problems = sessions_write(people, f"after {component} {how}")
    RESTART_TABLE.append(
        (
            component,
            how,
            recovered,
            "kept" if not problems else "; ".join(problems),
            "kept" if not write_problems else "; ".join(write_problems),
        )
    )
    hub_log = enclave.hub_container().logs(tail=200).decode(errors="replace")
    assert not problems, (problems, hub_log[-4000:])
    assert not write_problems, write_problems
    if how == "SIGKILL":
        # the operator's next `havre up` (an upgrade, Ansible's site.yml) after a recovered
        # crash works and changes nothing
        changes: list[str] = []
        stack.up(enclave.config, enclave.options, changes)
        assert not any(component in change for change in changes), changes
        assert not servers_answer(enclave, people)


def test_servers_are_kept_while_the_provider_is_down_and_new_ones_wait(enclave, people):
    idp = container_for(enclave, "idp")
    provider = Provider(enclave)
    late = new_user(enclave, provider, "rst-late", ["project-cardio"]).login()
    idp.stop(timeout=10)
    try:
        time.sleep(3 * 5 + 2)  # three membership checks with no provider
        assert not servers_answer(enclave, people)
        logs = enclave.hub_container().logs(since=int(time.time()) - 30).decode(errors="replace")
        assert "Identity provider unreachable" in logs, logs[-3000:]
        # a new server needs a fresh sign-in check: refused while the provider is down
        r = late.start_server("cardio")
        assert r.status_code == 503 and "sign-in provider is not answering" in r.text, r.text
        assert enclave.notebook_container(late.name, "cardio") is None
    finally:
        idp.start()
    wait_recovered(enclave, "idp", people, time.monotonic())
    # control: the same user, signed in again, starts the same server once it answers
    late = HubUser(enclave.url, late.name, late.password).login()
    assert late.start_server("cardio").status_code in (201, 202)
    late.wait_ready("cardio")
    late.stop_server("cardio")


def test_while_egress_is_down_its_page_says_so(enclave, people):
    egress = container_for(enclave, "egress")
    user, _project = people["servers"][0]
    egress.stop(timeout=10)
    try:
        r = user.session.get(user.url("services/egress/"), timeout=30)
        assert r.status_code in (502, 503), (r.status_code, r.text[:500])
        assert "Not answering right now" in r.text and "output checking" in r.text, r.text
        assert "Internal Server Error" not in r.text
    finally:
        egress.start()
    wait_recovered(enclave, "egress", people, time.monotonic())
    assert people["checker"].call("GET", "api/whoami").status_code == 200  # control


def print_restart_table(write) -> None:
    if not RESTART_TABLE:
        return
    write("")
    write("restart table: component | how | recovered after | servers | egress sessions")
    for component, how, seconds, servers, sessions in RESTART_TABLE:
        write(f"  {component:7} | {how:8} | {seconds:6.1f} s | {servers} | {sessions}")
