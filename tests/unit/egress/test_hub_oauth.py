"""Logins in progress are shared by the egress service's worker processes (egress.web.hub_oauth)."""

from __future__ import annotations

import os
import stat
import time

from egress.web.hub_oauth import SharedStateHubOAuth


def _worker(folder) -> SharedStateHubOAuth:
    # one HubOAuth per worker process, as each forked worker makes its own
    return SharedStateHubOAuth(
        oauth_state_dir=str(folder), api_token="unused", api_url="http://hub/"
    )


def test_a_login_started_in_one_worker_completes_in_another(tmp_path):
    first, second = _worker(tmp_path), _worker(tmp_path)
    state_id = first.generate_state("/services/egress/requests/abc", code_verifier="v" * 43)
    assert second.get_code_verifier(state_id) == "v" * 43
    assert second.get_next_url(state_id) == "/services/egress/requests/abc"
    (saved,) = tmp_path.glob("*.json")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    second.clear_oauth_state(state_id)
    assert first.get_code_verifier(state_id) is None  # used once, then gone
    assert list(tmp_path.iterdir()) == []


def test_unknown_forged_and_expired_states_give_nothing(tmp_path):
    worker = _worker(tmp_path)
    assert worker.get_code_verifier("never-issued-state-id") is None
    (tmp_path / "secret.json").write_text('{"code_verifier": "x"}')
    for forged in ("../secret", "secret", "a/../../etc/passwd", ""):
        assert worker.get_code_verifier(forged) is None
    old = worker.generate_state("/x", code_verifier="old")
    fresh = worker.generate_state("/y", code_verifier="fresh")
    past = time.time() - worker.oauth_state_max_age - 5
    os.utime(tmp_path / f"{old}.json", (past, past))
    assert worker.get_code_verifier(old) is None  # expired
    worker.clear_oauth_state(fresh)  # clearing one purges the expired ones too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


def test_without_a_folder_it_is_jupyterhubs_in_memory_behaviour():
    worker = SharedStateHubOAuth(api_token="unused", api_url="http://hub/")
    state_id = worker.generate_state("/z", code_verifier="mem")
    assert worker.get_code_verifier(state_id) == "mem"
