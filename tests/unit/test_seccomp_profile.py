"""The seccomp profile's text: an allow-list whose blocked calls no rule lets through.

What the kernel does with it is proven from inside real containers in
tests/integration/test_seccomp.py; these checks catch an edit that would quietly reopen a call.
"""

from __future__ import annotations

import json
from pathlib import Path

from havre.enclave.seccomp import (
    BLOCKED,
    NETLINK_PROTOCOLS,
    SOCKET_FAMILIES,
    notebook_profile,
    security_opt,
)

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
NAMESPACE_FLAGS |= 0x40000000


def allow_rules() -> list[dict]:
    return [r for r in notebook_profile()["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"]


def test_everything_not_listed_gets_eperm():
    profile = notebook_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1  # EPERM
    # native 64-bit calls only: no 32-bit (int 0x80 / compat) system call table
    assert all(not arch["subArchitectures"] for arch in profile["archMap"])


def test_no_rule_allows_a_blocked_call():
    allowed = {name for rule in allow_rules() for name in rule["names"]}
    assert not allowed & set(BLOCKED)
    refused = {
        name
        for rule in notebook_profile()["syscalls"]
        if rule["action"] == "SCMP_ACT_ERRNO" and rule.get("errnoRet") == 1
        for name in rule["names"]
    }
    assert set(BLOCKED) <= refused  # listed by name, with a comment saying why


def test_socket_is_allowed_only_for_unix_inet_inet6_and_netlink_route():
    rules = [r for r in allow_rules() if "socket" in r["names"]]
    families, netlink = set(), set()
    for rule in rules:
        assert rule["names"] == ["socket"]
        # at most one condition per argument: several on one argument would be ORed (runc)
        indexes = [arg["index"] for arg in rule["args"]]
        assert len(indexes) == len(set(indexes)) and all(
            arg["op"] == "SCMP_CMP_EQ" for arg in rule["args"]
        )
        by_index = {arg["index"]: arg["value"] for arg in rule["args"]}
        if by_index[0] == 16:
            assert set(by_index) == {0, 2}  # AF_NETLINK only with a named protocol
            netlink.add(by_index[2])
        else:
            assert set(by_index) == {0}
            families.add(by_index[0])
    assert families == set(SOCKET_FAMILIES) == {1, 2, 10}
    assert netlink == set(NETLINK_PROTOCOLS) == {0}
    assert not families & {16, 17, 40}  # AF_NETLINK (any), AF_PACKET, AF_VSOCK


def test_clone_cannot_make_namespaces_and_clone3_falls_back():
    rules = [r for r in notebook_profile()["syscalls"] if "clone" in r["names"]]
    assert len(rules) == 1 and rules[0]["names"] == ["clone"]
    (arg,) = rules[0]["args"]
    assert arg == {"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    (clone3,) = [r for r in notebook_profile()["syscalls"] if "clone3" in r["names"]]
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38  # ENOSYS


def test_every_conditional_rule_names_one_call():
    for rule in notebook_profile()["syscalls"]:
        if rule.get("args"):
            assert len(rule["names"]) == 1, rule
        assert rule.get("comment"), rule  # each group says what it is for


def test_the_security_opt_carries_the_versioned_file():
    text = security_opt()
    assert text.startswith("seccomp=")
    on_disk = json.loads((ROOT / "havre" / "enclave" / "seccomp" / "notebook.json").read_text())
    assert json.loads(text.removeprefix("seccomp=")) == on_disk


def test_the_profile_ships_in_the_wheel():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"havre.enclave.seccomp" = ["*.json"]' in pyproject


def test_re_execution_containers_get_the_same_profile(tmp_path):
    """egress.reexecution.engine applies ProjectSpawner.hardened_host_config: the profile comes
    with it (tests/integration/test_reexecution.py runs papermill under it)."""
    from egress.reexecution.engine import notebook_container_config
    from havre.host.demo import init_demo

    config, _users = init_demo(tmp_path / "state", "havre/notebook:test")
    host = notebook_container_config(
        config.project("cardio"), cpu=1.0, memory_bytes=2**30, pids=256
    )
    assert security_opt() in host["security_opt"]
    assert "no-new-privileges:true" in host["security_opt"]
