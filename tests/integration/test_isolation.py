"""Isolation proven by attack: every way out is tried from inside a notebook container.

Each probe is first run from a *control* container that is not under Havre's policy, and a
canary records that the probe's token arrived (so the probe can see a leak); then the same
probe runs inside a notebook container spawned by the hub, and the canary must see nothing.
Results are collected in ``PROBE_TABLE`` and printed at the end of the run.
"""

from __future__ import annotations

import socket
import time

import pytest

from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from tests.integration import probes
from tests.integration.canaries import (
    PROBE,
    host_address,
    host_resolver_on_loopback,
    link_local_address,
    new_token,
    parse_probe,
    tcp_canary,
    udp_canary,
)
from tests.integration.probes import (
    CONTROL_LABEL,
    SETTLE,
    bridge_interface,
    gateway_of,
    in_control,
    ip_on,
)
from tests.integration.probes import in_container as in_notebook

pytestmark = pytest.mark.docker

#: (channel, control result, notebook result), printed by conftest at the end of the session
PROBE_TABLE: list[tuple[str, str, str]] = []


def record(channel: str, control: str, notebook: str) -> None:
    PROBE_TABLE.append((channel, control, notebook))


@pytest.fixture(scope="module")
def control_networks(docker_client):
    """Networks for control containers: a plain internal one and an ordinary bridge."""
    yield from probes.control_networks(docker_client)


@pytest.fixture(scope="module")
def other_project(enclave):
    """Bob's running diabetes server, and a canary container on the diabetes network."""
    bob = enclave.user("bob")
    assert bob.start_server("diabetes").status_code in (201, 202)
    bob.wait_ready("diabetes")
    network = enclave.config.network_name("diabetes")
    canary = probes.canary_container(enclave.docker, network)
    yield bob, canary, network
    canary.remove(force=True)
    bob.stop_server("diabetes")


def test_host_services_through_the_gateway(enclave, alice_cardio, control_networks):
    """TCP and UDP to a canary on the host bound to all addresses."""
    _alice, notebook = alice_cardio
    client = enclave.docker
    tcp, udp = tcp_canary("0.0.0.0"), udp_canary("0.0.0.0")
    try:
        control_gw = gateway_of(client, control_networks["internal"])
        for kind, canary in (("tcp", tcp), ("udp", udp)):
            token = new_token()
            in_control(client, control_networks["internal"], kind, control_gw, canary.port, token)
            time.sleep(SETTLE)
            assert canary.saw(token), f"control {kind} probe did not reach the host canary"

            targets = [
                gateway_of(client, enclave.config.network_name("cardio")),
                gateway_of(client, f"{enclave.config.name}-front"),
                "172.17.0.1",  # docker0, the default bridge's gateway
            ]
            tokens = {}
            for target in targets:
                tokens[target] = new_token()
                in_notebook(notebook, kind, target, canary.port, tokens[target])
            time.sleep(SETTLE)
            leaked = [t for t, tok in tokens.items() if canary.saw(tok)]
            assert leaked == [], f"notebook {kind} reached the host through {leaked}"
            record(f"host {kind.upper()} via gateway", "arrived", "nothing arrived")
    finally:
        tcp.close()
        udp.close()


def test_another_projects_containers(enclave, alice_cardio, other_project):
    _alice, notebook = alice_cardio
    bob, canary, network = other_project
    client = enclave.docker
    canary_ip = ip_on(canary, network)

    token = new_token()
    in_control(client, network, "tcp", canary_ip, 7000, token)
    time.sleep(SETTLE)
    assert token in canary.logs().decode()

    token = new_token()
    result = in_notebook(notebook, "tcp", canary_ip, 7000, token)
    time.sleep(SETTLE)
    assert token not in canary.logs().decode()
    assert result["error"], result

    bob_container = enclave.notebook_container("bob", "diabetes")
    result = in_notebook(notebook, "tcp", ip_on(bob_container, network), 8888, new_token())
    assert result["error"], "reached another project's notebook server"
    record("another project's containers (TCP)", "arrived", "nothing arrived")


def test_hub_proxy_and_egress_ports(enclave, alice_cardio):
    _alice, notebook = alice_cardio
    client = enclave.docker
    hub = f"{enclave.config.name}-hub"
    egress = f"{enclave.config.name}-egress"

    # needed: the hub API and the egress service answer
    assert in_notebook(notebook, "tcp", hub, 8081, new_token())["sent"]
    assert in_notebook(notebook, "tcp", egress, 8090, new_token())["sent"]

    # the proxy's public port listens (seen from the front network) but not for notebooks
    front = f"{enclave.config.name}-front"
    assert in_control(client, front, "tcp", hub, 8000, new_token())["sent"]
    assert in_notebook(notebook, "tcp", hub, 8000, new_token())["error"]
    record("proxy public port 8000 on the hub", "connected", "refused")

    # the proxy's API listens inside the hub only
    hub_container = enclave.hub_container()
    code, out = hub_container.exec_run(
        ["python3", "-c", PROBE, "tcp", "127.0.0.1", "8001", new_token()]
    )
    assert parse_probe(out)["sent"]
    assert in_notebook(notebook, "tcp", hub, 8001, new_token())["error"]
    record("proxy API port 8001", "connected (inside hub)", "refused")


def test_outside_names_never_reach_a_resolver(enclave, alice_cardio, control_networks):
    """CVE-2024-29018: Docker 20.10 forwards lookups of internal-network containers from the
    host's namespace when the host resolver is on loopback (as with systemd-resolved)."""
    _alice, old_notebook = alice_cardio
    client = enclave.docker
    resolver = udp_canary("127.0.0.1", 53)
    try:
        with host_resolver_on_loopback("127.0.0.1"):
            token = new_token()
            in_control(client, control_networks["internal"], "dns", "-", 0, token)
            time.sleep(SETTLE)
            assert resolver.saw(token), "the control lookup did not reach the canary resolver"

            carol = enclave.user("carol")
            assert carol.start_server("diabetes").status_code in (201, 202)
            carol.wait_ready("diabetes")
            fresh = enclave.notebook_container("carol", "diabetes")
            tokens = []
            for notebook in (fresh, old_notebook):
                for kind, host, port in (("dns", "-", 0), ("dns-raw", "127.0.0.11", 53)):
                    tokens.append(new_token())
                    in_notebook(notebook, kind, host, port, tokens[-1])
            time.sleep(SETTLE)
            carol.stop_server("diabetes")
        assert not any(resolver.saw(t) for t in tokens), "a notebook lookup reached the resolver"
        # names the notebook needs still resolve
        result = in_notebook(old_notebook, "tcp", f"{enclave.config.name}-hub", 8081, "x")
        assert result["sent"], result
        record("DNS lookup of an outside name", "query arrived", "no query arrived")
    finally:
        resolver.close()


def test_metadata_service_address(enclave, alice_cardio, control_networks):
    _alice, notebook = alice_cardio
    client = enclave.docker
    with host_address("169.254.169.254"):
        canary = tcp_canary("169.254.169.254", 80)
        try:
            token = new_token()
            in_control(client, control_networks["bridge"], "http", "169.254.169.254", 80, token)
            time.sleep(SETTLE)
            assert canary.saw(token), "control could not reach the fake metadata service"
            token = new_token()
            result = in_notebook(notebook, "http", "169.254.169.254", 80, token)
            time.sleep(SETTLE)
            assert not canary.saw(token) and result["error"]
            record("metadata 169.254.169.254 (HTTP)", "arrived", "nothing arrived")
        finally:
            canary.close()


def test_ipv6_link_local_to_the_host(enclave, alice_cardio, control_networks):
    _alice, notebook = alice_cardio
    client = enclave.docker
    canary = tcp_canary("::", 0, family=socket.AF_INET6)
    # a control container with IPv6 on: the bridge gets its link-local address once a
    # container is attached, and the container's own address once duplicate detection is done
    control = client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        ["sleep", "120"],
        network=control_networks["internal"],
        user="0",
        detach=True,
        sysctls={
            "net.ipv6.conf.all.disable_ipv6": "0",
            "net.ipv6.conf.default.disable_ipv6": "0",
            "net.ipv6.conf.eth0.disable_ipv6": "0",
        },
    )
    try:
        control_ll = link_local_address(bridge_interface(client, control_networks["internal"]))
        time.sleep(3)  # IPv6 duplicate address detection in the control container
        token = new_token()
        _code, out = control.exec_run(
            ["python3", "-c", PROBE, "tcp6", f"{control_ll}%eth0", str(canary.port), token]
        )
        time.sleep(SETTLE)
        assert canary.saw(token), f"control could not reach the host over IPv6: {out!r}"

        project_bridge = bridge_interface(client, enclave.config.network_name("cardio"))
        token = new_token()
        result = in_notebook(
            notebook, "tcp6", f"{link_local_address(project_bridge)}%eth0", canary.port, token
        )
        time.sleep(SETTLE)
        assert not canary.saw(token) and result["error"]
        _code, out = notebook.exec_run(["cat", "/proc/net/if_inet6"])
        assert out.strip() == b""  # no IPv6 address at all in the container
        record("IPv6 link-local to the host", "arrived", "nothing arrived (no IPv6)")
    finally:
        control.remove(force=True)
        canary.close()


def test_raw_sockets_and_icmp(enclave, alice_cardio, other_project):
    _alice, notebook = alice_cardio
    _bob, canary, network = other_project
    client = enclave.docker
    canary_ip = ip_on(canary, network)

    control = in_control(client, network, "icmp-raw", canary_ip, 0, "-")
    assert control.get("reply"), control
    # the same probe, same uid (root), with only the notebook's capability drop: refused too,
    # so the drop closes raw sockets by itself, not just the non-root user
    dropped = in_control(client, network, "icmp-raw", canary_ip, 0, "-", cap_drop=["ALL"])
    assert "PermissionError" in (dropped["error"] or ""), dropped
    result = in_notebook(notebook, "icmp-raw", canary_ip, 0, "-")
    assert "PermissionError" in (result["error"] or ""), result
    record("raw socket (ICMP echo)", "echo reply", "PermissionError: no socket")
    record("raw socket as root, all caps dropped", "echo reply", "PermissionError: no socket")

    # unprivileged ICMP ("ping sockets"), allowed to every group by Docker's default
    hub = f"{enclave.config.name}-hub"
    hub_ip = ip_on(enclave.hub_container(), enclave.config.network_name("cardio"))
    control = in_control(
        client, enclave.config.network_name("cardio"), "icmp-dgram", hub_ip, 0, "-", user="1000"
    )
    assert control.get("reply"), control
    result = in_notebook(notebook, "icmp-dgram", hub_ip, 0, "-")
    assert result["error"] and not result.get("reply"), result
    record(f"ICMP datagram socket to {hub}", "echo reply", "refused: no socket")


def test_control_containers_are_gone(docker_client):
    """Control containers were run with remove=True; nothing of theirs is left running.

    They carry :data:`CONTROL_LABEL` (image labels are on every container of the image, so
    only a label of their own tells them apart)."""
    # positive control: a labelled container that is kept is found by the same filter
    kept = docker_client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE, ["true"], labels={CONTROL_LABEL: "1"}, detach=True
    )
    try:
        found = docker_client.containers.list(all=True, filters={"label": CONTROL_LABEL})
        assert kept.id in [c.id for c in found]
    finally:
        kept.remove(force=True)
    leftovers = docker_client.containers.list(all=True, filters={"label": CONTROL_LABEL})
    assert [c.name for c in leftovers] == []
