"""Canary servers that record whether anything arrived, and the probe run inside containers.

Every canary listens only on loopback, on an address the test itself put on an interface, or
inside a container the test started. A probe carries a unique token, so a canary can tell the
probe's traffic from anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Run inside a container as ``python3 -c PROBE KIND HOST PORT TOKEN``; prints one JSON line.
PROBE = r"""
import json, os, socket, struct, sys, urllib.request
kind, host, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
res = {"sent": False, "error": None}
def dns_query(name):
    q = struct.pack(">HHHHHH", 0x4856, 0x0100, 1, 0, 0, 0)
    for part in name.split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)
try:
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(token.encode()); s.close(); res["sent"] = True
    elif kind == "tcp6":
        info = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM)[0]
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(3)
        s.connect(info[4]); s.sendall(token.encode()); s.close(); res["sent"] = True
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(3):
            s.sendto(token.encode(), (host, port))
        res["sent"] = True
    elif kind == "http":
        urllib.request.urlopen(f"http://{host}:{port}/latest/meta-data/{token}", timeout=3).read()
        res["sent"] = True
    elif kind == "dns":
        socket.setdefaulttimeout(5)
        socket.getaddrinfo(f"{token}.example", 80)
        res["sent"] = True
    elif kind == "dns-raw":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        s.sendto(dns_query(f"{token}.example"), (host, port))
        res["sent"] = True
        res["answer_bytes"] = len(s.recv(512))
    elif kind == "icmp-raw":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(3)
        s.sendto(struct.pack(">BBHHH", 8, 0, 0xF7FF, 0, 0) , (host, 0)); res["sent"] = True
        s.recv(256); res["reply"] = True
    elif kind == "icmp-dgram":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(3)
        s.sendto(struct.pack(">BBHHH", 8, 0, 0, 0, 1), (host, 0)); res["sent"] = True
        s.recv(256); res["reply"] = True
    else:
        raise SystemExit("unknown probe " + kind)
except Exception as e:
    res["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(res))
"""


def new_token() -> str:
    return "havre" + uuid.uuid4().hex[:16]


def parse_probe(output: bytes) -> dict:
    line = output.decode(errors="replace").strip().splitlines()[-1]
    return json.loads(line)


#: seconds a canary's serving thread waits in one socket call before it looks at close()
POLL = 0.1


@dataclass
class Canary:
    """A listener on the host that keeps every payload it receives."""

    received: list[bytes] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)
    _closed: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def saw(self, token: str) -> bool:
        return any(token.encode() in payload for payload in list(self.received))

    def close(self) -> None:
        """Stop listening and free the address at once: the serving threads leave their
        socket call within :data:`POLL` seconds and are joined before the sockets close (a
        socket closed while a thread still waits in ``accept``/``recvfrom`` keeps its port
        bound for the life of the process, so the next canary on a fixed port, e.g. 53 or 80
        in another test file, failed with "Address already in use")."""
        self._closed.set()
        for thread in self._threads:
            thread.join(timeout=5 * POLL)
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()

    def _serve_tcp(self, sock: socket.socket) -> None:
        sock.settimeout(POLL)
        while not self._closed.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                chunks = []
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(4096):
                        chunks.append(chunk)
                        if b"\r\n\r\n" in chunk:  # an HTTP request: answer it
                            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            break
                self.received.append(b"".join(chunks))

    def _serve_udp(self, sock: socket.socket) -> None:
        sock.settimeout(POLL)
        while not self._closed.is_set():
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)

    def _start(self, target, sock: socket.socket) -> None:  # noqa: ANN001
        self._sockets.append(sock)
        thread = threading.Thread(target=target, args=(sock,), daemon=True)
        thread.start()
        self._threads.append(thread)


def tcp_canary(address: str = "0.0.0.0", port: int = 0, family: int = socket.AF_INET) -> Canary:
    canary = Canary()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(16)
    canary.port = sock.getsockname()[1]
    canary._start(canary._serve_tcp, sock)
    return canary


def udp_canary(address: str = "0.0.0.0", port: int = 0) -> Canary:
    canary = Canary()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    canary.port = sock.getsockname()[1]
    canary._start(canary._serve_udp, sock)
    return canary


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def host_address(address: str, name: str = "havre-md0") -> Iterator[str]:
    """Put ``address`` on a veth interface of the host (a stand-in for a metadata service)."""
    peer = name[:-1] + "1"
    subprocess.run(["ip", "link", "del", name], capture_output=True)
    _ip("link", "add", name, "type", "veth", "peer", "name", peer)
    try:
        _ip("addr", "add", f"{address}/32", "dev", name)
        _ip("link", "set", name, "up")
        _ip("link", "set", peer, "up")
        yield address
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@contextlib.contextmanager
def host_resolver_on_loopback(canary_address: str = "127.0.0.1") -> Iterator[None]:
    """Make the host's resolver a loopback address (as with systemd-resolved) for a moment.

    A read-only bind mount over /etc/resolv.conf, removed on exit; the file itself is never
    modified. Docker reads it when it sets up a new container's DNS.
    """
    fd, fake = tempfile.mkstemp(prefix="havre-resolv-")
    with os.fdopen(fd, "w") as f:
        f.write(f"nameserver {canary_address}\n")
    os.chmod(fake, 0o644)
    subprocess.run(["mount", "--bind", fake, "/etc/resolv.conf"], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "/etc/resolv.conf"], check=False)
        os.unlink(fake)


def link_local_address(interface: str, wait: float = 10.0) -> str:
    """The host's IPv6 link-local address on ``interface`` (waiting for it to appear)."""
    deadline = time.monotonic() + wait
    while True:
        out = subprocess.run(
            ["ip", "-6", "-o", "addr", "show", "dev", interface, "scope", "link"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            parts = line.split()
            if "tentative" not in parts:
                return parts[parts.index("inet6") + 1].split("/")[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{interface} has no IPv6 link-local address")
        time.sleep(0.5)


@contextlib.contextmanager
def canary_on_a_bridge(client) -> Iterator[tuple[str, str, Canary]]:  # noqa: ANN001
    """A TCP canary on the host's address on a bridge network made for the test: a container
    attached to that network reaches it (the positive control); a container with no network
    must not. Yields (network name, the host's address on it, the canary); removes both."""
    network = client.networks.create(f"havretest-canary-{new_token()[:8]}", driver="bridge")
    try:
        network.reload()
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        canary = tcp_canary(gateway)
        try:
            yield network.name, gateway, canary
        finally:
            canary.close()
    finally:
        network.remove()
