"""The broker client under a burst of spawns: a full accept queue is waited out, not a failure."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from havre.broker.client import BrokerClient, BrokerUnavailable


def _fill_accept_queue(path: str) -> list[socket.socket]:
    """Connections the listener never accepted, until the next connect gets EAGAIN."""
    fillers = []
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            return fillers
        fillers.append(sock)


def _answer_after(listener: socket.socket, delay: float, fillers: int) -> threading.Thread:
    """Accept (and drop) the queued connections after ``delay``, then answer one HTTP call."""

    def serve() -> None:
        time.sleep(delay)
        for _ in range(fillers):
            listener.accept()[0].close()
        connection, _ = listener.accept()
        with connection:
            # read the whole request, body included: http.client sends the body in a second
            # write, and closing before it arrives breaks the caller's pipe
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            head, _, body_read = request.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body_read) < length:
                body_read += connection.recv(4096)
            body = b'{"ok": true}'
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def listener(tmp_path: Path):
    path = str(tmp_path / "broker.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    yield path, sock
    sock.close()


def test_a_call_waits_for_room_in_a_full_accept_queue(listener):
    path, sock = listener
    fillers = _fill_accept_queue(path)
    # control: the queue is really full, a plain connect is refused at once
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    with pytest.raises(BlockingIOError):
        probe.connect(path)
    probe.close()
    server = _answer_after(sock, 0.3, len(fillers))
    assert BrokerClient(path, secret="s", timeout=10).call("status") == {"ok": True}
    server.join(5)
    for filler in fillers:
        filler.close()


def test_a_queue_that_stays_full_ends_with_a_sentence(listener):
    path, _ = listener
    fillers = _fill_accept_queue(path)
    with pytest.raises(BrokerUnavailable) as refused:
        BrokerClient(path, secret="s", timeout=0.3).call("status")
    assert "not answering" in refused.value.message
    for filler in fillers:
        filler.close()
