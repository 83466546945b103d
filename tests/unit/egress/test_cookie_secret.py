"""The egress service's cookie secret survives restarts, and a bad one stops the start."""

from __future__ import annotations

import stat

import pytest

from egress.service import COOKIE_SECRET_NAME, load_cookie_secret


def test_made_once_private_and_read_back_unchanged(tmp_path):
    first = load_cookie_secret(tmp_path)
    path = tmp_path / COOKIE_SECRET_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_cookie_secret(tmp_path) == first  # a restart: same secret, cookies still valid
    path.unlink()
    assert load_cookie_secret(tmp_path) != first  # rotation: delete, restart


@pytest.mark.parametrize("text", ["", "not hex at all\n", "abcd\n"])
def test_a_damaged_secret_stops_the_start_with_a_sentence(tmp_path, text):
    (tmp_path / COOKIE_SECRET_NAME).write_text(text)
    with pytest.raises(SystemExit, match="does not hold a cookie secret"):
        load_cookie_secret(tmp_path)
    assert (tmp_path / COOKIE_SECRET_NAME).read_text() == text  # nothing overwritten
