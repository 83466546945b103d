"""The tests' canary listeners free their address when closed (several test files bind the same
fixed ports, e.g. 127.0.0.1:53 and 169.254.169.254:80, in one pytest process)."""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration.canaries import tcp_canary, udp_canary


@pytest.mark.parametrize("make", [tcp_canary, udp_canary], ids=["tcp", "udp"])
def test_a_closed_canarys_port_can_be_bound_again_at_once(make):
    first = make("127.0.0.1", 0)
    port = first.port
    # control: while it listens, the same address is taken
    with pytest.raises(OSError, match="in use"):
        make("127.0.0.1", port)
    first.close()
    second = make("127.0.0.1", port)  # "Address already in use" before close() joined
    try:
        assert second.port == port
    finally:
        second.close()


def test_a_canary_still_hears_until_closed():
    canary = udp_canary("127.0.0.1", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"token-1", ("127.0.0.1", canary.port))
    for _ in range(50):
        if canary.saw("token-1"):
            break
        time.sleep(0.05)
    canary.close()
    assert canary.saw("token-1")
