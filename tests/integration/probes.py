"""The isolation probes' helpers, shared by the notebook's probe set
(tests/integration/test_isolation.py) and the desktop's (tests/e2e/test_desktop_session.py).

A probe (:data:`tests.integration.canaries.PROBE`) runs inside a container under Havre's policy
with :func:`in_container` (``docker exec`` as the container's own user, under its own seccomp
profile and capabilities) and, as its positive control, in a container of the notebook image
that is not under the policy (:func:`in_control`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from tests.integration.canaries import PROBE, parse_probe

SETTLE = 1.5  # seconds a canary is given to see late packets
#: a label of the control containers' own (see test_isolation's test_control_containers_are_gone)
CONTROL_LABEL = "havre.test.control-probe"


def in_container(container, kind: str, host: str, port: int, token: str) -> dict:  # noqa: ANN001
    """The probe run in ``container`` as its own user (``python3`` must be on its PATH)."""
    _code, out = container.exec_run(["python3", "-c", PROBE, kind, host, str(port), token])
    return parse_probe(out)


def in_control(
    client,  # noqa: ANN001
    network: str,
    kind: str,
    host: str,
    port: int,
    token: str,
    user: str = "0",
    **kw: object,
) -> dict:
    """The probe in a throwaway container of the notebook image on ``network``, unhardened."""
    out = client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        ["python3", "-c", PROBE, kind, host, str(port), token],
        network=network,
        user=user,
        remove=True,
        labels={CONTROL_LABEL: "1"},
        **kw,
    )
    return parse_probe(out)


def gateway_of(client, network: str) -> str:  # noqa: ANN001
    attrs = client.api.inspect_network(network)
    return attrs["IPAM"]["Config"][0]["Gateway"]


def bridge_interface(client, network: str) -> str:  # noqa: ANN001
    attrs = client.api.inspect_network(network)
    return attrs["Options"].get("com.docker.network.bridge.name") or "br-" + attrs["Id"][:12]


def ip_on(container, network: str) -> str:  # noqa: ANN001
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def control_networks(client, prefix: str = "havretest-control") -> Iterator[dict[str, str]]:  # noqa: ANN001
    """Networks for control containers (a module fixture's body): a plain internal one
    (``internal``) and an ordinary bridge (``bridge``); removed afterwards."""
    made = {}
    for key, internal in (("internal", True), ("bridge", False)):
        name = f"{prefix}-{key}"
        for old in client.networks.list(names=[name]):
            old.remove()
        made[key] = client.networks.create(
            name, driver="bridge", internal=internal, labels={"havre.test": "control"}
        ).name
    try:
        yield made
    finally:
        for name in made.values():
            client.networks.get(name).remove()


#: a TCP listener on port 7000 that logs "READY", then "GOT <first bytes>" per connection
CANARY_SERVER = (
    "import socket\n"
    "s=socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen(); print('READY', flush=True)\n"
    "while True:\n"
    "    c,_=s.accept(); print('GOT', c.recv(100).decode(), flush=True); c.close()\n"
)


def canary_container(client, network: str, wait: float = 30.0):  # noqa: ANN001, ANN201
    """A canary container on ``network``, listening on port 7000 (what arrived is in its
    logs); the caller removes it."""
    canary = client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        ["python3", "-u", "-c", CANARY_SERVER],
        network=network,
        detach=True,
        labels={"havre.test": "canary"},
    )
    deadline = time.monotonic() + wait
    while b"READY" not in canary.logs():
        if time.monotonic() > deadline:
            canary.remove(force=True)
            raise AssertionError(f"the canary container on {network} did not start listening")
        time.sleep(0.2)
    return canary
