"""Every Havre config checker reports on the one problems collector
(``havre.enclave.config.problems``): each problem with its dotted path, a did-you-mean for a
misspelt key, and every problem of a file at once."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from egress.notifications.smtp import SmtpSettingsError, parse_smtp_settings
from havre.enclave.config import EnclaveConfigError, parse_enclave_yaml
from havre.enclave.config.problems import ConfigProblemsError, Problems, show_value
from havre.idp.config import ConfigError, parse_config
from havre.idp.users import UsersFileError, parse_users
from havre.sdc.params import SDCParams, SDCParamsError

ENCLAVE = {
    "enclave": {"name": "havre-test", "state_dir": "/srv/havre"},
    "identity": {"provider": "embedded"},
    "projects": {"cardio": {"title": "Cardiology", "members": ["alice"]}},
}
IDP = {
    "issuer": "https://idp.example.org",
    "state_dir": "/var/lib/havre/idp",
    "users_file": "/var/lib/havre/idp/users.yaml",
    "clients": [
        {
            "client_id": "jupyterhub",
            "client_secret_file": "/var/lib/havre/secrets/idp-client-jupyterhub",
            "redirect_uris": ["https://hub.example.org/hub/oauth_callback"],
        }
    ],
}
SMTP = {"host": "relay.example.org", "sender": "havre@example.org"}
SDC = {"threshold": 10, "safe_nk_k": 0.9}
USERS = {"alice": {"password_hash": "scrypt$16384$8$1$c2FsdA$aGFzaA", "groups": ["cardio"]}}


def _enclave(data: dict[str, Any]) -> None:
    parse_enclave_yaml(yaml.safe_dump(data), "enclave.yaml")


def _idp(data: dict[str, Any]) -> None:
    parse_config(data, source="idp.yaml", base_dir=Path("/"), check_files=False)


def _smtp(data: dict[str, Any]) -> None:
    parse_smtp_settings(data, "enclave.yaml", path="notifications.smtp")


def _sdc(data: dict[str, Any]) -> None:
    SDCParams.from_mapping(data, source="projects.cardio.sdc")


def _users(data: dict[str, Any]) -> None:
    parse_users(data, "users.json")


#: (checker, its error class, a valid config, a misspelt key at its place in the file, that
#: key's dotted path, the key it should suggest, a field given the wrong type, its dotted path)
CHECKERS = [
    pytest.param(
        _enclave,
        EnclaveConfigError,
        ENCLAVE,
        ("identity", "provder"),
        "identity.provder",
        "provider",
        ("enclave", "uid_base", "many"),
        "enclave.uid_base",
        id="enclave",
    ),
    pytest.param(
        _enclave,
        EnclaveConfigError,
        ENCLAVE,
        ("projects", "cardio", "membres"),
        "projects.cardio.membres",
        "members",
        ("projects", "cardio", "title", ["a", "list"]),
        "projects.cardio.title",
        id="enclave-project",
    ),
    pytest.param(
        _idp,
        ConfigError,
        IDP,
        ("isuer",),
        "isuer",
        "issuer",
        ("access_token_seconds", "600"),
        "access_token_seconds",
        id="idp",
    ),
    pytest.param(
        _idp,
        ConfigError,
        IDP,
        ("clients", 0, "redirect_uri"),
        "clients[0].redirect_uri",
        "redirect_uris",
        ("clients", 0, "name", 42),
        "clients[0].name",
        id="idp-client",
    ),
    pytest.param(
        _smtp,
        SmtpSettingsError,
        SMTP,
        ("sendr",),
        "notifications.smtp.sendr",
        "sender",
        ("port", "twenty-five"),
        "notifications.smtp.port",
        id="smtp",
    ),
    pytest.param(
        _sdc,
        SDCParamsError,
        SDC,
        ("treshold",),
        "projects.cardio.sdc.treshold",
        "threshold",
        ("safe_nk_k", "high"),
        "projects.cardio.sdc.safe_nk_k",
        id="sdc",
    ),
    pytest.param(
        _users,
        UsersFileError,
        USERS,
        ("alice", "grops"),
        "users.alice.grops",
        "groups",
        ("alice", "groups", "cardio"),
        "users.alice.groups",
        id="idp-users",
    ),
]


def _with(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of ``data`` with ``value`` at ``path`` (a new key, or a replaced one)."""
    data = yaml.safe_load(yaml.safe_dump(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _problems(check: Callable[[Any], None], error: type[Exception], data: Any) -> list[str]:
    with pytest.raises(error) as caught:
        check(data)
    assert isinstance(caught.value, ConfigProblemsError)
    return caught.value.problems


@pytest.mark.parametrize(
    ("check", "error", "valid", "typo", "typo_path", "suggestion", "wrong", "wrong_path"),
    CHECKERS,
)
def test_every_config_checker_reports_alike(
    check, error, valid, typo, typo_path, suggestion, wrong, wrong_path
):
    check(valid)  # the base config is valid

    [problem] = _problems(check, error, _with(valid, typo, "x"))
    expected = f"{typo_path}: unknown key {typo[-1]!r}, did you mean {suggestion!r}?"
    assert problem.startswith(expected), problem

    [problem] = _problems(check, error, _with(valid, wrong[:-1], wrong[-1]))
    assert problem.startswith(f"{wrong_path}: "), problem
    assert f"(got {wrong[-1]!r})" in problem

    both = _with(_with(valid, typo, "x"), wrong[:-1], wrong[-1])
    problems = _problems(check, error, both)
    assert len(problems) == 2
    assert any("did you mean" in p for p in problems)
    assert any(p.startswith(f"{wrong_path}: ") for p in problems)


@pytest.mark.parametrize(
    ("error", "first_line"),
    [
        (EnclaveConfigError, "invalid enclave config f.yaml:"),
        (SmtpSettingsError, "invalid SMTP settings in f.yaml:"),
        (SDCParamsError, "invalid SDC parameters in f.yaml:"),
        (UsersFileError, "invalid users file f.yaml:"),
    ],
)
def test_errors_list_every_problem_and_survive_pickling(error, first_line):
    err = error(["a: one", "b: two"], "f.yaml")
    assert str(err).splitlines() == [first_line, "  - a: one", "  - b: two"]
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is error and again.problems == err.problems and str(again) == str(err)


def test_the_provider_error_keeps_its_argument_order():
    err = ConfigError("idp.yaml", ["issuer: required"])
    assert str(err).splitlines() == ["invalid provider config idp.yaml:", "  - issuer: required"]
    again = pickle.loads(pickle.dumps(err))
    assert again.source == "idp.yaml" and again.problems == ["issuer: required"]


def test_the_collector():
    p = Problems()
    assert not p and len(p) == 0
    p.add("a.b", "must be a string", True)
    p.add("a.c", "required")
    p.add("a.d", "too long", "x" * 500)
    assert p and len(p) == 3
    items = list(p)
    assert items[0].startswith("a.b: must be a string (got True); note: YAML reads unquoted yes/no")
    assert items[1] == "a.c: required"
    assert len(items[2]) < 120 and "..." in items[2]
    assert show_value({"k": list(range(100))}).endswith("...]}")

    p = Problems()
    p.unknown_keys({"name": 1, "nmae": 2, 3: 4}, "top", ("name", "title"))
    assert p.items == [
        "top.nmae: unknown key 'nmae', did you mean 'name'? (allowed keys: name, title)",
        "top.3: unknown key 3 (allowed keys: name, title)",
    ]
    p = Problems()
    assert p.section({"s": None}, "s", "", ("a",)) == {}
    assert p.section({"s": 5}, "s", "top", ("a",)) == {} and p.items == [
        "top.s: must be a mapping (got 5)"
    ]
    with pytest.raises(EnclaveConfigError, match="invalid enclave config src"):
        p.raise_if_any(EnclaveConfigError, "src")
    Problems().raise_if_any(EnclaveConfigError, "src")  # nothing to report
