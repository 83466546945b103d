"""No routing inside the hub and egress containers.

Both sit on the front network and every project network. A container's network namespace
inherits the host's ``net.ipv4.ip_forward=1`` (which Docker sets), so without Havre's sysctls
each of them is a router between project networks. Here a sender on network A hand-crafts an
Ethernet frame to the hub's (then egress's) address on A, carrying a UDP datagram addressed to a
canary on network B. The control is a plain container on the same two networks with forwarding
on: the canary must see the control's datagram, and nothing through the hub or egress.

The test networks are ordinary bridges: on an internal network with ``br_netfilter``, Docker's
host rules would already drop a frame addressed off-subnet, and the control would prove nothing.
"""

from __future__ import annotations

import time

import pytest

from havre.enclave.hardening import NO_FORWARDING_SYSCTLS
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from tests.integration.canaries import new_token

pytestmark = pytest.mark.docker

#: (router, forwarding sysctl, what reached the canary on B), printed at the end of the run
ROUTING_TABLE: list[tuple[str, str, str]] = []
TEST_LABEL = "havre.test.no-routing"
CANARY_PORT = 39123

SEND_FRAMES = r"""
import socket, struct, sys, time
dst_mac, dst_ip, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
src_mac = open("/sys/class/net/eth0/address").read().strip()
src_ip = socket.gethostbyname(socket.gethostname())
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
payload = token.encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 16, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
mac = lambda text: bytes.fromhex(text.replace(":", ""))
frame = mac(dst_mac) + mac(src_mac) + b"\x08\x00" + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(8):
    s.send(frame)
    time.sleep(0.2)
print("SENT", src_ip, "->", dst_mac, dst_ip)
"""

CANARY = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("READY", flush=True)
while True:
    data, peer = s.recvfrom(512)
    print("GOT", data.decode(errors="replace"), "from", peer[0], flush=True)
"""


def _labels(enclave) -> dict[str, str]:
    # the enclave's label too, so `havre down --purge` removes leftovers of an aborted run
    return {"havre.enclave": enclave.config.name, TEST_LABEL: "1"}


def _run(docker_client, enclave, name: str, network: str, command: list[str], **kw):
    return docker_client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        command,
        name=name,
        detach=True,
        network=network,
        labels=_labels(enclave),
        **kw,
    )


def _address(container, network: str) -> tuple[str, str]:
    container.reload()
    net = container.attrs["NetworkSettings"]["Networks"][network]
    return net["IPAddress"], net["MacAddress"]


@pytest.fixture(scope="module")
def lab(docker_client, enclave):
    """Networks A and B, a sender on A, a canary on B, and a forwarding control router."""
    prefix = f"{enclave.config.name}-noroute"
    made_networks, made_containers = [], []
    try:
        nets = {}
        for side in ("a", "b"):
            net = docker_client.networks.create(
                f"{prefix}-{side}", driver="bridge", labels=_labels(enclave)
            )
            made_networks.append(net)
            nets[side] = net.name
        sleep = ["sleep", "600"]
        sender = _run(
            docker_client,
            enclave,
            f"{prefix}-sender",
            nets["a"],
            sleep,
            user="0",
            cap_drop=["ALL"],
            cap_add=["NET_RAW"],
        )
        made_containers.append(sender)
        canary = _run(
            docker_client,
            enclave,
            f"{prefix}-canary",
            nets["b"],
            ["python3", "-u", "-c", CANARY, str(CANARY_PORT)],
            user="1000",
        )
        made_containers.append(canary)
        control = _run(
            docker_client,
            enclave,
            f"{prefix}-control",
            nets["a"],
            sleep,
            user="0",
            sysctls={"net.ipv4.ip_forward": "1"},
        )
        made_containers.append(control)
        docker_client.networks.get(nets["b"]).connect(control)
        deadline = time.monotonic() + 30
        while b"READY" not in canary.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield {"nets": nets, "sender": sender, "canary": canary, "control": control}
    finally:
        for container in made_containers:
            container.remove(force=True)
        for router in (enclave.hub_container(), enclave.egress_container()):
            for net in made_networks:
                try:
                    net.disconnect(router, force=True)
                except Exception:  # noqa: BLE001 - not connected (a failed test)
                    pass
        for net in made_networks:
            net.remove()


def _through(lab, router, name: str) -> str:
    """Send the token to the canary on B via ``router``'s address on A; what the canary saw."""
    nets = lab["nets"]
    for net in nets.values():
        router.reload()
        if net not in router.attrs["NetworkSettings"]["Networks"]:
            lab_net = router.client.networks.get(net)
            lab_net.connect(router)
    _router_ip, router_mac = _address(router, nets["a"])
    canary_ip, _ = _address(lab["canary"], nets["b"])
    token = new_token()
    code, out = lab["sender"].exec_run(
        ["python3", "-c", SEND_FRAMES, router_mac, canary_ip, str(CANARY_PORT), token]
    )
    assert code == 0 and b"SENT" in out, out
    time.sleep(1.5)
    arrived = token.encode() in lab["canary"].logs()
    _code, forwarding = router.exec_run(["cat", "/proc/sys/net/ipv4/ip_forward"])
    ROUTING_TABLE.append(
        (
            name,
            f"ip_forward={forwarding.decode().strip()}",
            "arrived on B" if arrived else "nothing",
        )
    )
    return "arrived" if arrived else "nothing"


def _sysctl(container, path: str) -> str:
    code, out = container.exec_run(["cat", path])
    assert code == 0, out
    return out.decode().strip()


@pytest.mark.parametrize("role", ["hub", "egress"])
def test_forwarding_is_off_inside(enclave, role):
    container = enclave.hub_container() if role == "hub" else enclave.egress_container()
    assert _sysctl(container, "/proc/sys/net/ipv4/ip_forward") == "0"
    assert _sysctl(container, "/proc/sys/net/ipv6/conf/all/forwarding") == "0"
    container.reload()
    sysctls = container.attrs["HostConfig"]["Sysctls"]
    assert sysctls == NO_FORWARDING_SYSCTLS


def test_a_plain_container_would_forward(lab):
    """Why the sysctls are needed: a container that does not set them inherits the host's."""
    _code, out = lab["sender"].exec_run(["cat", "/proc/sys/net/ipv4/ip_forward"])
    assert out.decode().strip() == "1"


def test_the_control_router_delivers(lab):
    assert _through(lab, lab["control"], "control (plain container, forwarding on)") == "arrived"


@pytest.mark.parametrize("role", ["hub", "egress"])
def test_no_packet_crosses_from_network_a_to_b_through(enclave, lab, role):
    router = enclave.hub_container() if role == "hub" else enclave.egress_container()
    # the control first, in the same run: the path works, only the router differs
    assert _through(lab, lab["control"], "control (again)") == "arrived"
    assert _through(lab, router, role) == "nothing"
