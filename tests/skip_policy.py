"""Skips can't turn a CI run green: outside a short allow-list, a skipped test fails the run.

A test skips when the machine lacks something (a Docker engine, an image, Chromium,
PostgreSQL). On a developer's laptop that is convenient; in CI it would hide a missing feature
behind a green run. So when ``CI`` is ``true`` (as CI sets it) or ``HAVRE_STRICT_SKIPS=1``,
every skip whose reason does not match :data:`ALLOWED_SKIPS` makes pytest exit non-zero,
naming each test and what was missing. The allow-list is printed at the end of every run, with
how many skips each entry excused, so nobody has to guess what a green run left out.

Loaded for the whole run by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class AllowedSkip:
    """One kind of skip that may happen in CI, and why it doesn't hide a feature."""

    pattern: str  #: a regular expression searched in the skip's reason
    why: str  #: why a CI run may skip it

    def matches(self, reason: str) -> bool:
        return re.search(self.pattern, reason) is not None


#: The only skips a strict run accepts. Each names a machine capability that CI doesn't need to
#: prove the feature, and where the feature is proven instead.
ALLOWED_SKIPS: tuple[AllowedSkip, ...] = (
    AllowedSkip(
        r"creating device files needs privileges",
        "the device-file refusal is proven as root (CI runs as root); only non-root runs skip it",
    ),
)

#: Skips that must never be allowed in CI, however the list above grows: the features they would
#: hide have no other proof. A unit test checks that no allowed pattern matches them.
NEVER_ALLOWED: tuple[str, ...] = (
    # tests/cluster/conftest.py: the Swarm cluster mode is proven only on the test cluster
    "needs a test cluster: a test cluster needs root (network namespaces, veth pairs, iptables)",
    "needs a test cluster: this machine can't make network namespaces",
    "needs a test cluster: this machine has no usable iptables",
    "needs a test cluster: a test cluster needs the `dockerd` command",
)

STRICT_ENV = "HAVRE_STRICT_SKIPS"


def strict_skips() -> bool:
    """True in CI (``CI=true``) or when ``HAVRE_STRICT_SKIPS=1``."""
    if os.environ.get(STRICT_ENV, "").strip() in ("1", "true", "yes"):
        return True
    return os.environ.get("CI", "").strip().lower() == "true"


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


class SkipPolicy:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.excused: dict[AllowedSkip, int] = dict.fromkeys(ALLOWED_SKIPS, 0)
        self.refused: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = _reason(report)
        for allowed in ALLOWED_SKIPS:
            if allowed.matches(reason):
                self.excused[allowed] += 1
                return
        self.refused.append((report.nodeid, reason))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # a module-level skip (importorskip) skips at collection
        if report.skipped:
            self.pytest_runtest_logreport(report)  # type: ignore[arg-type]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        write = terminalreporter.write_line
        terminalreporter.section("skip policy")
        mode = "strict (CI): a skip outside this list fails the run" if self.strict else "lenient"
        write(f"mode: {mode}; allowed skips:")
        for allowed, count in self.excused.items():
            write(f"  [{count} skipped] /{allowed.pattern}/ - {allowed.why}")
        if self.refused:
            verb = "FAIL the run" if self.strict else "would fail a CI run"
            write(f"{len(self.refused)} skip(s) outside the allow-list {verb}:")
            for nodeid, reason in self.refused[:50]:
                write(f"  {nodeid}: {reason}")
            if len(self.refused) > 50:
                write(f"  ... and {len(self.refused) - 50} more")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.strict and self.refused and exitstatus in (0, 5):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(strict_skips()), "havre-skip-policy")
