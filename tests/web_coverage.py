"""Which of the egress service's web handlers the test run exercised, through the live service.

The egress service runs in its container, out of reach of the test process's coverage; its
access log is not. When the session's enclave stops, :func:`collect` reads the egress
container's log; the terminal summary lists every route and HTTP method the service
implements (taken from ``egress.web.app.make_app`` itself, so a new handler is listed the day it
is added) with how often it answered, and names those never called. In a strict run (CI) of
the whole suite, a handler never exercised fails the run.

Loaded for the whole run by ``tests/conftest.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import pytest

from tests.skip_policy import strict_skips

PREFIX = "/services/egress/"
METHODS = ("get", "head", "post", "put", "patch", "delete")
#: a tornado access-log line: "200 GET /services/egress/api/whoami?x=1 (172.18.0.1) 3.21ms"
_ACCESS = re.compile(r"\b([1-5][0-9]{2}) (GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) \(")

#: (route pattern, handler class name, method) -> responses below 500
HITS: Counter[tuple[str, str, str]] = Counter()
#: whether collect() ran at all (an enclave was started in this session)
COLLECTED: list[bool] = []


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    handler: str
    methods: tuple[str, ...]


def egress_routes() -> list[Route]:
    """The egress service's routes and the methods each handler implements."""
    from tornado import web

    from egress.web.app import make_app

    app = make_app(None, PREFIX, b"0" * 32)  # type: ignore[arg-type] - routes only
    routes = []
    for rule in app.wildcard_router.rules:
        handler = rule.target
        methods = tuple(
            m.upper()
            for m in METHODS
            if getattr(handler, m, None) is not getattr(web.RequestHandler, m, None)
        )
        if not methods and handler.prepare is not web.RequestHandler.prepare:
            methods = ("ANY",)  # answers every method in prepare() (e.g. the API's 404)
        routes.append(Route(rule.matcher.regex, handler.__name__, methods))
    return routes


def collect(log_text: str) -> None:
    """Count the access-log lines of ``log_text`` by route and method."""
    COLLECTED.append(True)
    routes = egress_routes()
    for status, method, uri in _ACCESS.findall(log_text):
        if int(status) >= 500:
            continue
        path = uri.split("?", 1)[0]
        for route in routes:  # the first match, as tornado routes
            if route.pattern.match(path):
                key = "ANY" if route.methods == ("ANY",) else method
                HITS[(route.pattern.pattern, route.handler, key)] += 1
                break


def unexercised() -> list[tuple[str, str]]:
    never = []
    for route in egress_routes():
        for method in route.methods:
            if method == "HEAD":
                continue
            if not HITS[(route.pattern.pattern, route.handler, method)]:
                never.append((route.handler, method))
    return never


def _whole_suite(config: pytest.Config) -> bool:
    """The run is the whole suite: pytest's own test paths, no -k or -m selection."""
    option = config.option
    if option.keyword or option.markexpr:
        return False
    return config.args_source == pytest.Config.ArgsSource.TESTPATHS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COLLECTED:
        return
    write = terminalreporter.write_line
    terminalreporter.section("egress web handlers exercised through the live service")
    for route in egress_routes():
        for method in route.methods:
            if method == "HEAD":
                continue
            count = HITS[(route.pattern.pattern, route.handler, method)]
            never = "  NEVER" if not count else ""
            write(f"  {route.handler:<26} {method:<6} {count:>6}{never}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not COLLECTED or not strict_skips() or not _whole_suite(session.config):
        return
    never = unexercised()
    if never and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            names = ", ".join(f"{h} {m}" for h, m in never)
            reporter.write_line(f"egress handlers never exercised (fails a CI run): {names}")
