"""The identity provider's users file is checked in full: every problem of every user is
reported at once, each by its dotted path, and a good file loads as it always did."""

from __future__ import annotations

import json
import pickle

import pytest

from havre.enclave.config.problems import ConfigProblemsError
from havre.idp.users import (
    UserRecord,
    UsersFileError,
    parse_users,
    read_users_file,
    seed_users,
    write_users_file,
)

#: a hash of the old scheme (the format is what is checked here, not the password)
HASH = "scrypt$16384$8$1$c2FsdA$aGFzaA"
GOOD = {
    "alice": {"password_hash": HASH, "groups": ["cardio", "/havre/checkers"], "email": "a@x.org"},
    "bob": {"password_hash": HASH, "groups": [], "email": "", "name": "Bob B."},
}


def _write(path, data):
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def test_a_good_file_loads_as_before(tmp_path):
    users = read_users_file(_write(tmp_path / "users.json", GOOD))
    assert users == {
        "alice": UserRecord("alice", HASH, ("cardio", "/havre/checkers"), "a@x.org", ""),
        "bob": UserRecord("bob", HASH, (), "", "Bob B."),
    }
    assert read_users_file(tmp_path / "missing.json") == {}
    write_users_file(tmp_path / "again.json", users)
    assert read_users_file(tmp_path / "again.json") == users


def test_a_file_with_three_problems_lists_all_three(tmp_path):
    bad = json.loads(json.dumps(GOOD))
    bad["alice"]["groups"] = ["cardio", "not a group"]
    bad["bob"]["emial"] = "b@x.org"
    bad["Carol"] = {"password_hash": HASH}
    path = _write(tmp_path / "users.json", bad)
    with pytest.raises(UsersFileError) as caught:
        read_users_file(path)
    err = caught.value
    assert isinstance(err, ConfigProblemsError) and isinstance(err, ValueError)
    assert err.source == str(path)
    assert err.problems == [
        "users.alice.groups[1]: invalid group name: must match "
        "/?[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127} (got 'not a group')",
        "users.bob.emial: unknown key 'emial', did you mean 'email'? "
        "(allowed keys: email, groups, name, password_hash)",
        "users.Carol: invalid username: must match [a-z0-9][a-z0-9._@-]{0,63} (got 'Carol')",
    ]
    assert str(err).splitlines()[0] == f"invalid users file {path}:"
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems and str(again) == str(err)


def test_every_field_is_checked_and_a_password_is_never_echoed():
    entry = {"password_hash": "hunter2", "groups": "cardio", "email": "nobody", "name": "a\nb"}
    with pytest.raises(UsersFileError) as caught:
        parse_users({"dave": entry}, "users.json")
    problems = caught.value.problems
    assert problems == [
        "users.dave.password_hash: must be an Argon2id (or older scrypt) hash (see hash_password)",
        "users.dave.email: must be an address",
        "users.dave.groups: must be a list of group names (got 'cardio')",
        "users.dave.name: must be a single line of at most 200 characters",
    ]
    assert not any("hunter2" in p for p in problems)


def test_the_file_itself_must_be_an_object_of_users(tmp_path):
    with pytest.raises(UsersFileError, match=r"users: must be a JSON object of username -> user"):
        parse_users(["alice"], "users.json")
    with pytest.raises(UsersFileError) as caught:
        parse_users({"erin": "not an object"}, "users.json")
    assert caught.value.problems == [
        "users.erin: must be an object with password_hash, groups, email, name"
    ]
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(UsersFileError, match="users: not valid JSON"):
        read_users_file(broken)


def test_writing_and_seeding_report_every_problem_and_write_nothing(tmp_path):
    path = tmp_path / "users.json"
    write_users_file(path, GOOD)
    before = path.read_text()
    with pytest.raises(UsersFileError) as caught:
        write_users_file(path, {"alice": {"password_hash": "x"}, "bob": {"password_hash": 1}})
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "users.alice.password_hash",
        "users.bob.password_hash",
    ]
    with pytest.raises(UsersFileError) as caught:
        seed_users(path, {"newbie": {"groups": []}, "other": {"pasword": "x"}})
    assert caught.value.problems[0] == "users.newbie.password: required for a new user"
    assert caught.value.problems[1].startswith(
        "users.other.pasword: unknown key 'pasword', did you mean 'password'?"
    )
    assert path.read_text() == before
