"""What the hub and the re-execution runner call: the broker over its Unix socket.

A blocking client (the hub calls it from a worker thread: see ``ProjectSpawner``). Each call
is one ``POST /v1/<action>`` with the caller's secret; a refusal raises :class:`BrokerRefused`
with the broker's sentence and status, a broker that doesn't answer (restarting, not started)
raises :class:`BrokerUnavailable` with a sentence for the user.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any


class BrokerError(Exception):
    """The broker refused or could not be reached: ``status`` and a sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BrokerRefused(BrokerError):
    """The broker answered with a refusal (4xx) or an engine error (5xx)."""


class BrokerUnavailable(BrokerError):
    """Nothing answers on the broker's socket."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("broker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        # A Unix socket whose accept queue is full refuses a connect with EAGAIN at once
        # (a socket with a timeout is non-blocking underneath): when many spawns call at the
        # same moment, wait for room, up to the timeout, instead of failing the spawn.
        deadline = time.monotonic() + (self.timeout or 0)
        pause = 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self._path)
            except BlockingIOError:
                sock.close()
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
                continue
            except OSError:
                sock.close()
                raise
            self.sock = sock
            return


class BrokerClient:
    """One caller's client: the socket's path and the caller's secret (or its file)."""

    def __init__(
        self,
        socket_path: str | Path,
        *,
        secret: str = "",
        secret_file: str | Path = "",
        timeout: float = 120.0,
    ) -> None:
        self.socket_path = str(socket_path)
        self._secret = secret
        self.secret_file = str(secret_file)
        self.timeout = timeout

    def secret(self) -> str:
        if not self._secret and self.secret_file:
            self._secret = Path(self.secret_file).read_text().strip()
        return self._secret

    def call(self, action: str, **fields: Any) -> dict[str, Any]:
        """``POST /v1/<action>`` with ``fields``; the broker's answer, or a BrokerError."""
        return self.raw(action, json.dumps(fields).encode())

    def raw(self, action: str, body: bytes, secret: str | None = None) -> dict[str, Any]:
        """Send ``body`` as is (the tests use it to send what a hostile caller would)."""
        connection = _UnixConnection(self.socket_path, self.timeout)
        token = self.secret() if secret is None else secret
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request("POST", f"/v1/{action}", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (
            FileNotFoundError,
            ConnectionRefusedError,
            ConnectionResetError,
            BlockingIOError,
        ) as err:
            raise BrokerUnavailable(
                503,
                "The spawn broker is not answering (restarting?); try again in a minute.",
            ) from err
        finally:
            connection.close()
        try:
            answer = json.loads(data)
        except ValueError:
            answer = {"error": data[:200].decode(errors="replace")}
        if response.status != 200:
            raise BrokerRefused(response.status, str(answer.get("error", "refused")))
        return answer
