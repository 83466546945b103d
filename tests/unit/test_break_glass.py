"""Break glass, the pure rules (havre/enclave/break_glass.py) and its config key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from havre.enclave.break_glass import (
    REASON_MAX,
    BreakGlassError,
    WindowStore,
    clean_minutes,
    clean_reason,
    clean_target,
    hub_key,
    open_window,
    target_covers,
)
from havre.enclave.config import (
    BREAK_GLASS_HUB_GROUP,
    SERVER_ACCESS_HUB_GROUP,
    EnclaveConfigError,
    parse_enclave_config,
)

NOW = datetime(2026, 12, 6, 18, 0, 0, tzinfo=UTC)
REASON = "INC-4711: alice's kernel hangs, she asked for help"


def test_a_window_is_open_from_activation_to_its_end_exclusive():
    window = open_window("sam", REASON, "alice", "15", 60, NOW)
    assert window.until - window.started == timedelta(minutes=15)
    assert window.is_open(NOW) and window.is_open(NOW + timedelta(minutes=14, seconds=59))
    assert not window.is_open(NOW + timedelta(minutes=15))
    assert not window.is_open(NOW - timedelta(seconds=1))
    assert (
        len(window.session) == 32
        and window.session != open_window("sam", REASON, "alice", "15", 60, NOW).session
    )


@pytest.mark.parametrize(
    ("minutes", "expected"), [("", 60), (None, 60), ("1", 1), ("60", 60), (" 30 ", 30)]
)
def test_duration_defaults_to_the_configured_maximum(minutes, expected):
    assert clean_minutes(minutes, 60) == expected


@pytest.mark.parametrize("minutes", ["0", "61", "-5", "1.5", "ten", "1e3"])
def test_duration_outside_one_to_the_maximum_is_refused_with_a_sentence(minutes):
    with pytest.raises(BreakGlassError, match="whole number of minutes from 1 to 60"):
        clean_minutes(minutes, 60)


@pytest.mark.parametrize(
    ("reason", "sentence"),
    [
        ("", "Give a reason"),
        ("   \n ", "Give a reason"),
        (None, "Give a reason"),
        ("urgent", "too short"),
        ("x" * (REASON_MAX + 1), "too long"),
        ("ticket 1234 \u202e reversed text", "control or formatting"),
    ],
)
def test_a_reason_is_required_and_bounded(reason, sentence):
    with pytest.raises(BreakGlassError, match=sentence):
        clean_reason(reason)


def test_a_reason_keeps_its_words_on_one_line():
    assert clean_reason("  ticket  4711:\n kernel   hangs ") == "ticket 4711: kernel hangs"


@pytest.mark.parametrize("target", ["any", "alice", "alice/cardio", "ALICE", "a.b@site/x-1"])
def test_targets(target):
    assert clean_target(target) == target.lower()


@pytest.mark.parametrize("target", ["", "alice/", "/cardio", "alice/cardio/lab", "a b", "*"])
def test_bad_targets_are_refused_with_a_sentence(target):
    with pytest.raises(BreakGlassError, match="Name the server you need"):
        clean_target(target)


@pytest.mark.parametrize(
    ("target", "owner", "server", "covered"),
    [
        ("any", "alice", "cardio", True),
        ("alice", "alice", "cardio", True),
        ("alice", "alicia", "cardio", False),
        ("alice/cardio", "alice", "cardio", True),
        ("alice/cardio", "alice", "diabetes", False),
        ("alice/cardio", "bob", "cardio", False),
    ],
)
def test_which_servers_a_target_covers(target, owner, server, covered):
    assert target_covers(target, owner, server) is covered


def test_the_store_survives_a_restart_and_never_gives_an_expired_window(tmp_path):
    path = tmp_path / "hub" / "break-glass.json"
    store = WindowStore(path)
    window = open_window("sam", REASON, "any", "5", 60, NOW)
    store.put(window)
    assert path.stat().st_mode & 0o077 == 0
    again = WindowStore(path)
    assert again.open_for("sam", NOW + timedelta(minutes=1)) == window
    assert again.open_for("sam", NOW + timedelta(minutes=5)) is None  # over, whatever the file
    assert again.expired(NOW + timedelta(minutes=5)) == [window]
    assert again.pop("sam") == window and WindowStore(path).windows == {}


def test_an_unreadable_store_opens_no_window(tmp_path):
    path = tmp_path / "break-glass.json"
    path.write_text("{not json")
    assert WindowStore(path).windows == {}


def test_the_hub_key_is_derived_not_the_token():
    assert hub_key("secret-token") == hub_key("secret-token")
    assert hub_key("secret-token") != hub_key("other-token")
    assert "secret-token" not in hub_key("secret-token") and len(hub_key("x")) == 64


BASE = {
    "enclave": {"name": "bg", "state_dir": "/srv/bg"},
    "projects": {"cardio": {"title": "Cardio"}},
}


def config(**identity):
    return parse_enclave_config({**BASE, "identity": identity}, source="unit")


def test_break_glass_minutes_default_and_bounds():
    assert config().identity.break_glass_minutes == 60
    assert config(break_glass_minutes=1).identity.break_glass_minutes == 1
    assert config(break_glass_minutes=480).identity.break_glass_minutes == 480


@pytest.mark.parametrize("minutes", [0, 481, -1, "60", True, 1.5])
def test_break_glass_minutes_outside_the_bounds_are_refused(minutes):
    with pytest.raises(EnclaveConfigError, match="identity.break_glass_minutes"):
        config(break_glass_minutes=minutes)


def test_the_provider_group_makes_a_user_eligible_never_gives_server_access():
    cfg = config(server_access_groups=["havre-server-access"])
    groups = cfg.hub_groups_for(["havre-server-access", "project-cardio"])
    assert BREAK_GLASS_HUB_GROUP in groups and SERVER_ACCESS_HUB_GROUP not in groups
    assert BREAK_GLASS_HUB_GROUP not in config().hub_groups_for(["havre-server-access"])
