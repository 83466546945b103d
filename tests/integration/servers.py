"""Test helper shared by the integration tests that need a user's servers in several projects
(tests/integration/test_identities.py, test_side_channels.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tests.integration.hub_client import HubUser


@contextmanager
def servers_running(user: HubUser, projects: Sequence[str]) -> Iterator[HubUser]:
    """Start ``user``'s server in each project (all at once, then wait for each), yield the
    user, and stop them all afterwards."""
    for project in projects:
        r = user.start_server(project)
        assert r.status_code in (201, 202), r.text
    try:
        for project in projects:
            user.wait_ready(project)
        yield user
    finally:
        for project in projects:
            user.stop_server(project)
