"""The spawn broker on the real engine (issue #14): a compromised hub reaches neither the host
nor another project, and the broker starts nothing outside its policy.

* Attack: ``docker exec -u 0`` into the **hub** container (an assumed kernel or JupyterHub
  exploit gives root in it) and probe: the Docker socket, the broker's socket without a secret
  and with another caller's secret, another project's data, the identity provider's signing
  key, the egress database, routing between project networks. CONTROL: the same probes from a
  deliberately unhardened copy of the hub (the pre-broker hub: root, the Docker socket and the
  whole state folder mounted, no sysctls) all succeed. The table is printed at the end.
* Refusals: the live broker refuses an unknown user or project, extra fields, a smuggled
  container specification, a non-member, a second server, with a sentence.
* Fuzz: hypothesis sends requests of every shape with each caller's secret and with wrong
  ones; afterwards every container the engine has for this enclave is inside the policy
  (:func:`havre.broker.policy.container_problems`).
"""

from __future__ import annotations

import json
import secrets
import uuid

import docker.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from havre.broker.client import BrokerClient, BrokerError
from havre.broker.policy import ACTIONS, container_problems
from havre.enclave.config import project_hub_group
from havre.host import layout, services
from tests.integration.hub_client import HubError

pytestmark = pytest.mark.docker

#: (probe, control: unhardened copy, compromised hub)
BROKER_TABLE: list[tuple[str, str, str]] = []


def socket_path(enclave) -> str:
    return str(enclave.config.state_dir / layout.BROKER_SOCKET_SUBDIR / "broker.sock")


def secret(enclave, caller: str) -> str:
    return (enclave.config.state_dir / "secrets" / f"broker-{caller}").read_text().strip()


def client(enclave, caller: str) -> BrokerClient:
    return BrokerClient(socket_path(enclave), secret=secret(enclave, caller), timeout=120)


def probes(enclave, runner_secret: str) -> dict[str, str]:
    """Python run as root in a container: each probe's outcome, one word or short phrase."""
    state = enclave.config.state_dir
    other_data = enclave.config.project("diabetes").data_path
    return {
        "Docker engine API (/var/run/docker.sock)": """
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect('/var/run/docker.sock')
    s.sendall(b'GET /version HTTP/1.0\\r\\n\\r\\n')
    print('ANSWERS' if b'ApiVersion' in s.recv(4096) else 'silent')
except OSError as e:
    print('refused:', e.strerror)
""",
        "broker: server start, no secret": f"""
import json, socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({layout.BROKER_SOCKET!r})
except OSError as e:
    print('no broker socket:', e.strerror); raise SystemExit
body = json.dumps({{'user': 'alice', 'project': 'diabetes'}}).encode()
s.sendall(b'POST /v1/server.start HTTP/1.0\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body) + body)
print(s.recv(4096).split(b'\\r\\n')[0].decode())
""",
        "broker: server start, runner's secret": f"""
import json, socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({layout.BROKER_SOCKET!r})
except OSError as e:
    print('no broker socket:', e.strerror); raise SystemExit
body = json.dumps({{'user': 'alice', 'project': 'diabetes'}}).encode()
s.sendall(b'POST /v1/server.start HTTP/1.0\\r\\nAuthorization: Bearer {runner_secret}\\r\\n'
          b'Content-Length: %d\\r\\n\\r\\n' % len(body) + body)
print(s.recv(4096).split(b'\\r\\n')[0].decode())
""",
        "another project's data": f"""
import os
try:
    print('READ', len(os.listdir({str(other_data)!r})), 'entries')
except OSError as e:
    print('refused:', e.strerror)
""",
        "the provider's signing key": f"""
try:
    print('READ', len(open({str(state / "idp" / "signing-key.pem")!r}).read()), 'bytes')
except OSError as e:
    print('refused:', e.strerror)
""",
        "the egress database": f"""
try:
    print('READ', len(open({str(state / "egress" / "egress.db")!r}, 'rb').read(100)), 'bytes')
except OSError as e:
    print('refused:', e.strerror)
""",
        "IP forwarding (a route between projects)": """
print('ON' if open('/proc/sys/net/ipv4/ip_forward').read().strip() == '1' else 'off')
""",
        "capabilities of root": """
for line in open('/proc/self/status'):
    if line.startswith('CapEff'):
        print('NONE' if int(line.split()[1], 16) == 0 else 'SOME: ' + line.split()[1])
""",
    }


#: what a probe prints when the forbidden thing worked (the control must show each)
SUCCESS = {
    "Docker engine API (/var/run/docker.sock)": "ANSWERS",
    "broker: server start, no secret": None,  # the unhardened hub needs no broker
    "broker: server start, runner's secret": None,
    "another project's data": "READ",
    "the provider's signing key": "READ",
    "the egress database": "READ",
    "IP forwarding (a route between projects)": "ON",
    "capabilities of root": "SOME",
}


def run_probe(container, code: str) -> str:
    result = container.exec_run(["python3", "-c", code], user="0")
    return (
        result.output.decode(errors="replace").strip().splitlines()[-1:][0] if result.output else ""
    )


@pytest.fixture(scope="module")
def unhardened_hub(enclave):
    """The hub as it was before the broker: root, the Docker socket, the whole state folder,
    every project network, no sysctls (a copy: sleeps, runs no hub)."""
    state = str(enclave.config.state_dir)
    container = enclave.docker.containers.run(
        enclave.options.hub_image,
        ["sleep", "infinity"],
        name=f"{enclave.config.name}-unhardened-{uuid.uuid4().hex[:6]}",
        detach=True,
        network=layout.front_network_name(enclave.config),
        volumes={
            state: {"bind": state, "mode": "rw"},
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
        labels={"havre.test": "unhardened-hub"},
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def test_a_compromised_hub_reaches_no_socket_no_other_project_no_secret(
    enclave, alice_cardio, unhardened_hub
):
    """Root in the hub (``docker exec -u 0``) against the unhardened copy (the control)."""
    hub = enclave.hub_container()
    runner_secret = secret(enclave, "runner")
    failures = []
    for name, code in probes(enclave, runner_secret).items():
        control = run_probe(unhardened_hub, code)
        result = run_probe(hub, code)
        BROKER_TABLE.append((name, control, result))
        expected = SUCCESS[name]
        if expected is not None and not control.startswith(expected):
            failures.append(f"control didn't succeed for {name}: {control}")
        if expected is not None and result.startswith(expected):
            failures.append(f"the hub could: {name}: {result}")
    by_name = {name: result for name, _control, result in BROKER_TABLE}
    # the broker answers the hub's socket, and refuses: no secret (401), the runner's (403)
    assert by_name["broker: server start, no secret"].endswith("401 Unauthorized"), by_name
    assert by_name["broker: server start, runner's secret"].endswith("403 Forbidden"), by_name
    assert not failures, failures
    # the hub itself runs as a uid of its own, with a read-only root
    hub.reload()
    assert hub.attrs["Config"]["User"] == f"{layout.HUB_UID}:{layout.HUB_UID}"
    assert hub.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert not any("docker.sock" in b for b in hub.attrs["HostConfig"]["Binds"] or [])


def test_only_the_broker_holds_the_docker_socket(enclave):
    holders = []
    for container in enclave.docker.containers.list(
        filters={"label": f"havre.enclave={enclave.config.name}"}
    ):
        if any("docker.sock" in str(m.get("Source")) for m in container.attrs.get("Mounts", [])):
            holders.append(container.name)
    assert holders == [layout.broker_container_name(enclave.config)]
    broker = enclave.docker.containers.get(holders[0])
    host = broker.attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert (
        host["CapDrop"] == ["ALL"]
        and sorted(host["CapAdd"])
        == [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
        ]
        or sorted(host["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    )
    sources = {m["Source"] for m in broker.attrs["Mounts"]}
    state = enclave.config.state_dir
    for forbidden in ("egress", "idp", "hub", "hub-secrets"):
        assert str(state / forbidden) not in sources, forbidden
    assert str(state / "secrets") not in sources  # only the two callers' secret files


def refused(call) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        call()
    return info.value


def test_the_broker_refuses_what_it_does_not_know(enclave, alice_cardio):
    hub = client(enclave, "hub")
    cases = [
        (lambda: hub.call("server.start", user="nobody", project="cardio"), 403, "not a member"),
        (lambda: hub.call("server.start", user="alice", project="nope"), 404, "no project"),
        (lambda: hub.call("server.start", user="alice", project="diabetes"), 403, "not a member"),
        (
            lambda: hub.call("server.start", user="alice", project="cardio", image="alpine"),
            400,
            "not accepted",
        ),
        (
            lambda: hub.call(
                "server.start", user="alice", project="cardio", binds=["/:/host"], privileged=True
            ),
            400,
            "not accepted",
        ),
        # alice's cardio server runs (the fixture): a second one is refused
        (
            lambda: hub.call(
                "server.start", user="alice", project="cardio", groups=[project_hub_group("cardio")]
            ),
            409,
            "already has",
        ),
        (lambda: hub.call("reexec.start", project="cardio", run_id="0" * 16), 403, "may not"),
        (lambda: hub.raw("server.start", b"{not json"), 400, "JSON object"),
        (lambda: hub.raw("server.start", b"{}", secret="wrong"), 401, "secret"),
        (
            lambda: client(enclave, "runner").call("server.stop", user="alice", project="cardio"),
            403,
            "may not",
        ),
    ]
    for call, status, words in cases:
        err = refused(call)
        assert (err.status, words in err.message) == (status, True), (status, words, err.message)
    # control: the hub's secret and a well-formed request are answered
    assert hub.call("server.inspect", user="alice", project="cardio")["state"] == "running"
    # every call is in the broker's audit log, with the caller and the result
    audit = (enclave.config.state_dir / layout.BROKER_DIR / "audit.jsonl").read_text()
    events = [json.loads(line) for line in audit.splitlines()]
    assert any(
        e["caller"] == "unauthenticated" and e["result"] == "refused" and e["status"] == 401
        for e in events
    )
    assert any(
        e["caller"] == "hub" and e.get("user") == "alice" and e["status"] == 409 for e in events
    )
    assert "JUPYTERHUB_API_TOKEN" not in audit


_names = st.sampled_from(["alice", "bob", "carol", "mallory", "../x", "", "ALICE", "a" * 70])
_projects = st.sampled_from(["cardio", "diabetes", "nope", "../cardio", "", "cardio/.."])
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "user": _names | _values,
        "project": _projects | _values,
        "run_id": st.sampled_from(["0123456789abcdef", "../../etc"]) | _values,
        "groups": st.lists(st.sampled_from(["project-cardio", "docker", "admins"]), max_size=3),
        "env": st.dictionaries(
            st.sampled_from(["JUPYTERHUB_X", "LD_PRELOAD", "PATH"]), st.text(max_size=10)
        ),
        "image": st.sampled_from(["alpine", "havre/hub:0.1.0"]),
        "binds": st.just(["/:/host:rw"]),
        "privileged": st.booleans(),
        "cap_add": st.just(["SYS_ADMIN"]),
        "network_mode": st.sampled_from(["host", "bridge"]),
        "user_id": st.just("0"),
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    caller=st.sampled_from(["hub", "runner", "wrong", "none"]),
    action=st.sampled_from([*ACTIONS, "container.create", "../server.start"]),
    body=_bodies,
)
def test_fuzz_no_request_starts_a_container_outside_the_policy(enclave, caller, action, body):
    token = {"wrong": secrets.token_hex(32), "none": ""}.get(caller)
    c = client(enclave, "hub")
    if token is None:
        c = client(enclave, caller)
    try:
        answer = c.raw(action, json.dumps(body).encode(), secret=token)
    except BrokerError as err:
        assert 400 <= err.status < 600 and err.message.endswith("."), err.message
        return
    # allowed: only callers with their own secret, for their own actions
    assert token is None
    if action == "server.start":
        client(enclave, "hub").call("server.stop", user=body["user"], project=body["project"])
    assert isinstance(answer, dict)


def test_after_the_fuzz_every_container_is_inside_the_policy(enclave):
    """Runs after the fuzz (file order): everything the engine has for this enclave."""
    roles_seen = set()
    problems = []
    image_ids = {i: enclave.docker.images.get(i).id for i in enclave.config.allowed_images}
    for container in enclave.docker.containers.list(
        all=True, filters={"label": f"havre.enclave={enclave.config.name}"}
    ):
        labels = container.labels
        roles_seen.add(labels.get("havre.role"))
        if labels.get("havre.role") in ("notebook", "reexecution") or labels.get("havre.user"):
            problems += container_problems(enclave.config, container.attrs, image_ids)
        elif labels.get("havre.role") not in ("hub", "egress", "idp", "runner", "broker"):
            problems.append(f"{container.name}: unexpected role {labels.get('havre.role')}")
    assert not problems, problems
    # and nothing unlabelled was made from a project's image or with the engine's socket
    for container in enclave.docker.containers.list(all=True):
        if container.labels.get("havre.enclave"):
            continue
        mounts = str(container.attrs.get("Mounts"))
        assert str(enclave.config.state_dir) not in mounts or container.labels.get("havre.test"), (
            container.name
        )


def test_the_broker_restart_keeps_servers_and_a_spawn_meanwhile_gets_a_sentence(
    enclave, alice_cardio
):
    alice, _container = alice_cardio
    alice.open_server("cardio")
    assert alice.session.get(alice.server_url("cardio", "api/status"), timeout=30).ok  # control
    broker = enclave.docker.containers.get(layout.broker_container_name(enclave.config))
    broker.stop(timeout=10)
    try:
        bob = enclave.user("bob")
        r = bob.start_server("diabetes")
        if r.status_code in (201, 202):  # the hub answers at once, the spawn fails after
            with pytest.raises(HubError, match="gone"):
                bob.wait_ready("diabetes", timeout=60)
        else:
            assert r.status_code == 503, r.text
        logs = enclave.hub_container().logs(tail=300).decode(errors="replace")
        assert "The spawn broker is not answering" in logs, logs[-3000:]
        assert enclave.notebook_container("bob", "diabetes") is None
        # alice's server keeps answering while the broker is down
        assert alice.session.get(alice.server_url("cardio", "api/status"), timeout=30).ok
    finally:
        broker.start()
        services.wait_for_broker(enclave.config)
    # control: once it answers, bob's server starts
    bob = enclave.user("bob")
    assert bob.start_server("diabetes").status_code in (201, 202)
    bob.wait_ready("diabetes")
    bob.stop_server("diabetes")


def test_a_notebook_cant_reach_the_broker(enclave, alice_cardio):
    _alice, container = alice_cardio
    out = container.exec_run(["ls", "/run/havre-broker", "/var/run/docker.sock"]).output
    assert b"No such file" in out
    try:
        enclave.docker.containers.get(layout.broker_container_name(enclave.config))
    except docker.errors.NotFound:  # pragma: no cover
        pytest.fail("no broker")
