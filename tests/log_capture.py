"""The ``json_log`` fixture: every log record of the test, formatted by Havre's JSON log format
(:mod:`havre.enclave.logs`) as a service would write it, each line parsed back as JSON.

A test triggers a security event through the real code path and asserts the line it left
(``json_log.events("download.refused")``); the same test's allowed request leaves none.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from havre.enclave.logs import JsonFormatter


class JsonLog:
    """What a service's JSON log holds so far."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter("test"))
        self.handler.setLevel(logging.INFO)

    def lines(self) -> list[dict[str, Any]]:
        """Every line, each parsed as one JSON object (a line that isn't one fails the test)."""
        parsed = []
        for line in self.stream.getvalue().splitlines():
            value = json.loads(line)
            assert isinstance(value, dict), line
            parsed.append(value)
        return parsed

    def events(self, name: str) -> list[dict[str, Any]]:
        """The lines of security event ``name``; each is checked to be at WARNING."""
        found = [line for line in self.lines() if line.get("event") == name]
        assert all(line["level"] == "WARNING" for line in found), found
        return found

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    """Capture every record that reaches the root logger (Havre's loggers propagate there)."""
    log = JsonLog()
    root = logging.getLogger()
    level = root.level
    root.addHandler(log.handler)
    root.setLevel(min(level or logging.WARNING, logging.INFO))
    try:
        yield log
    finally:
        root.removeHandler(log.handler)
        root.setLevel(level)


def container_events(
    container: Any, name: str, since: float, *, expect: int = 1, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The security events ``name`` a running service container wrote to its real log (what
    ``docker logs`` and a collector read) since Unix time ``since``, each line parsed as JSON
    and checked to be at WARNING. Lines that are not Havre's JSON (the proxy's, the idle
    culler's) are skipped. Docker copies a container's output into its log a moment after it
    is written: this reads again until ``expect`` lines are there, for ``timeout`` seconds at
    most, and returns what it found (``expect=0``: read once)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        raw = container.logs(stdout=True, stderr=True, since=int(since)).decode(errors="replace")
        for line in raw.splitlines():
            if not line.startswith("{"):
                continue
            value = json.loads(line)
            if value.get("event") == name:
                assert value["level"] == "WARNING", value
                found.append(value)
        if len(found) >= expect or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)
