"""One function decides container hardening (havre/enclave/hardening.py).

Every container the stack launcher creates takes its hardening from
:func:`havre.enclave.hardening.service_hardening` (through ``services._service_container``), and
notebook and re-execution containers from :func:`hardened_host_config`; both are built on
:func:`container_hardening`. The source check fails if a ``containers.run`` call in the stack
launcher spells a hardening option itself, or is made without the one function.
"""

from __future__ import annotations

import ast
import inspect
from types import SimpleNamespace

import pytest

from havre.enclave import hardening
from havre.enclave.config import Limits
from havre.enclave.hardening import (
    NO_FORWARDING_SYSCTLS,
    container_hardening,
    hardened_host_config,
    service_hardening,
)
from havre.host import services

#: options only the one function may set
HARDENING_KEYS = set(container_hardening(tmp_size="1m", pids=1)) | {"sysctls"}
#: the service containers `havre up` starts
ROLES = {"egress", "runner", "idp", "broker", "hub"}


def _run_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("run", "create")
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "containers"
    ]


def _hardening_source(call: ast.Call, function: ast.FunctionDef) -> str | None:
    """The role whose ``_service_container(...)`` the call spreads (``**``), directly or through
    a local variable assigned from it in the same function; None if none."""
    assigned: dict[str, ast.Call] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id] = node.value
    for keyword in call.keywords:
        if keyword.arg is not None:
            continue
        value = keyword.value
        if isinstance(value, ast.Name):
            value = assigned.get(value.id)
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "_service_container"
        ):
            return ast.literal_eval(value.args[1])
    return None


def test_every_container_of_the_stack_launcher_is_hardened_by_the_one_function():
    tree = ast.parse(inspect.getsource(services))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    roles = set()
    calls = 0
    for function in functions:
        for call in _run_calls(function):
            calls += 1
            spelled = {k.arg for k in call.keywords} & HARDENING_KEYS
            assert not spelled, f"{function.name} sets {spelled} itself"
            role = _hardening_source(call, function)
            assert role is not None, f"{function.name} starts a container without the hardening"
            roles.add(role)
    assert calls == len(ROLES)
    assert roles == ROLES
    # and _service_container takes all of it from the one function, spelling none itself
    (helper,) = [f for f in functions if f.name == "_service_container"]
    called = {
        n.func.id
        for n in ast.walk(helper)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "service_hardening" in called
    literal_keys = {
        k.value
        for n in ast.walk(helper)
        if isinstance(n, ast.Dict)
        for k in n.keys
        if isinstance(k, ast.Constant)
    }
    assert not literal_keys & HARDENING_KEYS, literal_keys & HARDENING_KEYS


def test_the_source_check_sees_a_container_hardened_by_hand():
    """Control: the check above catches a container that spells its own hardening."""
    tree = ast.parse(
        "def _start_x(client):\n"
        "    client.containers.run('img', cap_drop=['ALL'], read_only=True)\n"
    )
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    (call,) = _run_calls(function)
    assert {k.arg for k in call.keywords} & HARDENING_KEYS == {"cap_drop", "read_only"}
    assert _hardening_source(call, function) is None


@pytest.mark.parametrize("role", sorted(ROLES))
def test_service_containers_get_the_base_hardening(role):
    options = services._service_container(
        SimpleNamespace(name="unit"), role, "digest", tmp="16m", pids=128
    )
    assert options == {
        **service_hardening(tmp_size="16m", pids=128),
        "restart_policy": {"Name": "unless-stopped"},
        "labels": {"havre.enclave": "unit", "havre.role": role, "havre.digest": "digest"},
    }
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges:true"]  # Docker's default seccomp
    assert options["read_only"] is True and options["privileged"] is False
    assert options["pids_limit"] == 128
    assert options["sysctls"] == dict(NO_FORWARDING_SYSCTLS)


def test_notebook_containers_are_the_base_hardening_plus_the_notebook_profile():
    project = SimpleNamespace(limits=Limits(cpu=1.5, memory_bytes=2 * 1024**3, pids=300))
    host = hardened_host_config(project, network="unit-net")
    base = container_hardening(tmp_size=hardening.TMP_SIZE, pids=300, havre_seccomp=True)
    for key in ("cap_drop", "security_opt", "read_only", "pids_limit", "privileged"):
        assert host[key] == base[key], key
    assert host["security_opt"][1].startswith('seccomp={"archMap"')  # Havre's own profile
    assert host["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=512m,mode=1777"}
    assert host["mem_limit"] == host["memswap_limit"] == 2 * 1024**3
    assert host["cpu_quota"] == 150_000 and host["cpu_period"] == 100_000
    assert host["network_mode"] == "unit-net" and host["ipc_mode"] == "private"


def test_a_process_limit_below_one_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="process limit must be at least 1"):
        container_hardening(tmp_size="1m", pids=0)
