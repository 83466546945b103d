"""Break glass in the hub: which groups a sign-in gives (spawner/break_glass_hub.py).

The page, the checks at each request and the audit calls run against the live hub in
``tests/integration/test_break_glass.py``; here, the group rule of a sign-in or refresh, with a
real window store and a reporter whose egress service does not answer (port 9 on loopback).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from havre.enclave.break_glass import WindowStore, open_window
from spawner import break_glass_hub

NOW = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)


@pytest.fixture
def state(tmp_path):
    reporter = break_glass_hub.AuditReporter("http://127.0.0.1:9/events", "token", timeout=2)
    state = break_glass_hub.BreakGlass(WindowStore(tmp_path / "bg.json"), reporter, 60)
    state.clock = lambda: NOW
    break_glass_hub.STATE = state
    yield state
    break_glass_hub.STATE = None


def model(name, *groups):
    return {"name": name, "groups": list(groups)}


def test_server_access_never_comes_from_the_providers_claims(state):
    out = break_glass_hub.adjust_groups(model("sam", "break-glass", "server-access"))
    assert out["groups"] == ["break-glass"]


def test_an_open_window_of_an_eligible_user_gives_server_access(state):
    state.store.put(open_window("sam", "INC-1: a hung kernel", "alice", "30", 60, NOW))
    out = break_glass_hub.adjust_groups(model("sam", "break-glass", "project-cardio"))
    assert out["groups"] == ["break-glass", "project-cardio", "server-access"]
    # an expired window gives nothing
    state.clock = lambda: NOW + timedelta(minutes=30)
    assert (
        "server-access" not in break_glass_hub.adjust_groups(model("sam", "break-glass"))["groups"]
    )


def test_leaving_the_group_ends_the_window_and_the_end_is_kept_until_written(state, json_log):
    window = open_window("sam", "INC-1: a hung kernel", "alice", "30", 60, NOW)

    async def sign_in_without_the_group() -> dict:
        state.store.put(window)
        out = break_glass_hub.adjust_groups(model("sam", "project-cardio"))
        for _ in range(50):  # the report is sent from the event loop; it fails (no service)
            if state.reporter.pending:
                break
            await asyncio.sleep(0.1)
        return out

    out = asyncio.run(sign_in_without_the_group())
    assert out["groups"] == ["project-cardio"]
    assert state.store.windows == {}
    assert state.reporter.pending == [
        {"event": "ended", "session": window.session, "user": "sam", "why": "left the group"}
    ]
    # the SIEM's lines: the end, and the report the audit log could not take yet
    (ended,) = json_log.events("break_glass.ended")
    assert (ended["user"], ended["session_id"], ended["why"]) == (
        "sam",
        window.session,
        "left the group",
    )
    (unrecorded,) = json_log.events("break_glass.unrecorded")
    assert unrecorded["session_id"] == window.session


def test_without_break_glass_configured_the_claims_still_never_give_access():
    assert break_glass_hub.STATE is None
    out = break_glass_hub.adjust_groups(model("sam", "server-access", "project-cardio"))
    assert out["groups"] == ["project-cardio"]


def test_an_activation_report_that_is_not_written_raises():
    reporter = break_glass_hub.AuditReporter("http://127.0.0.1:9/events", "token", timeout=2)
    with pytest.raises(RuntimeError, match="egress service unreachable"):
        asyncio.run(reporter.report({"event": "activated"}))


class _Authorization:
    """What :func:`break_glass_hub.gate_oauth` reads of the hub's OAuth authorization
    handler: the signed-in user, the hub's (real) database and the request's client_id."""

    def __init__(self, db, orm_user, client_id: str) -> None:
        self.db = db
        self.current_user = SimpleNamespace(name=orm_user.name, orm_user=orm_user)
        self.client_id = client_id
        self.request = SimpleNamespace(method="GET")

    def get_arguments(self, name: str) -> list[str]:
        return [self.client_id] if name == "client_id" else []


@pytest.fixture
def hub_db():
    """A JupyterHub database (the real ORM, in memory): alice's cardio server and sam."""
    from jupyterhub import orm

    db = orm.new_session_factory("sqlite:///:memory:")()
    alice, sam = orm.User(name="alice"), orm.User(name="sam")
    client = orm.OAuthClient(identifier="jupyterhub-user-alice-cardio")
    db.add_all([alice, sam, client])
    db.commit()
    db.add(orm.Spawner(user=alice, name="cardio", oauth_client_id=client.identifier))
    db.commit()
    return db, alice, sam


def test_opening_another_users_server_is_refused_and_logged(state, hub_db, json_log):
    from jupyterhub import orm
    from tornado import web

    db, alice, sam = hub_db

    def open_alices_server(who) -> None:
        handler = _Authorization(db, who, "jupyterhub-user-alice-cardio")
        asyncio.run(break_glass_hub.gate_oauth(handler))

    # control: alice opening her own server is no break glass and leaves no event
    asyncio.run(
        break_glass_hub.gate_oauth(_Authorization(db, alice, "jupyterhub-user-alice-cardio"))
    )
    assert json_log.lines() == []
    # sam, no window: refused
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(
            break_glass_hub.gate_oauth(_Authorization(db, sam, "jupyterhub-user-alice-cardio"))
        )
    assert info.value.status_code == 403
    (refused,) = json_log.events("break_glass.refused")
    assert (refused["user"], refused["target"]) == ("sam", "alice/cardio")
    # sam's window names another server: refused, naming his window
    state.store.put(open_window("sam", "INC-1: a hung kernel", "bob", "30", 60, NOW))
    sam.groups.append(orm.Group(name="server-access"))
    db.commit()
    with pytest.raises(web.HTTPError):
        asyncio.run(
            break_glass_hub.gate_oauth(_Authorization(db, sam, "jupyterhub-user-alice-cardio"))
        )
    second = json_log.events("break_glass.refused")[1]
    assert second["session_id"] == state.store.windows["sam"].session
    # a covering window, but the audit log can't take the use: refused (503), logged
    state.store.put(open_window("sam", "INC-1: a hung kernel", "alice", "30", 60, NOW))
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(
            break_glass_hub.gate_oauth(_Authorization(db, sam, "jupyterhub-user-alice-cardio"))
        )
    assert info.value.status_code == 503
    (unrecorded,) = json_log.events("break_glass.unrecorded")
    assert unrecorded["user"] == "sam"
    assert json_log.events("break_glass.used") == []  # never logged as used when unrecorded
