"""A tornado upstream on loopback with download guards in front of it: the set-up the download
guard's unit tests share (tests/unit/test_download_guard.py, test_desktop_guard.py).

Real sockets only: the upstream plays a notebook server's (or a remote desktop's) routes, each
guard is a real :class:`spawner.download_guard.DownloadGuard` on a port of its own, registered
for the upstream as the hub registers a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from tornado import httpclient, httpserver, web, websocket

from spawner.download_guard import DownloadGuard


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo(websocket.WebSocketHandler):
    """A websocket that sends each message back, binary as binary, and takes the first
    subprotocol the client offers."""

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


@contextlib.contextmanager
def guarded_upstream(
    routes: list[Any], prefix: str, desktop: Sequence[bool] = (False,)
) -> Iterator[tuple[asyncio.AbstractEventLoop, list[DownloadGuard]]]:
    """An event loop, and one guard per item of ``desktop`` in front of an upstream serving
    ``routes``, each registered at ``prefix`` (``True``: as an ``access: desktop`` server).
    On exit the guards and the upstream stop and the loop closes."""

    async def setup() -> tuple[httpserver.HTTPServer, list[DownloadGuard]]:
        port = free_port()
        upstream = httpserver.HTTPServer(web.Application(routes))
        upstream.listen(port, "127.0.0.1")
        guards = []
        for as_desktop in desktop:
            guard = DownloadGuard("127.0.0.1", free_port())
            guard.routes.register(prefix, f"http://127.0.0.1:{port}", desktop=as_desktop)
            guards.append(guard)
        return upstream, guards

    loop = asyncio.new_event_loop()
    upstream, guards = loop.run_until_complete(setup())
    try:
        yield loop, guards
    finally:
        for guard in guards:
            guard.stop()
        upstream.stop()
        loop.close()


async def fetch(guard: DownloadGuard, path: str, **kwargs: Any) -> httpclient.HTTPResponse:
    """``path`` through ``guard``, any status returned (not raised)."""
    client = httpclient.AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(guard.url + path, raise_error=False, **kwargs)
    finally:
        client.close()
