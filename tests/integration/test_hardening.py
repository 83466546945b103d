"""Hardening seen from inside a spawned notebook container."""

from __future__ import annotations

import pytest

from tests.integration.cgroups import container_limits

pytestmark = pytest.mark.docker


def sh(container, command: str) -> str:
    code, out = container.exec_run(["sh", "-c", command])
    return out.decode(errors="replace")


def read_file(container, path: str) -> str | None:
    """A file's text inside the container, or None when it does not exist."""
    code, out = container.exec_run(["cat", path])
    return out.decode(errors="replace") if code == 0 else None


def status_field(container, name: str) -> str:
    for line in sh(container, "cat /proc/self/status").splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in /proc/self/status")


def test_no_capabilities_and_no_new_privileges(alice_cardio):
    _alice, container = alice_cardio
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status_field(container, field) == "0000000000000000", field
    assert status_field(container, "NoNewPrivs") == "1"


def test_runs_as_a_non_root_user(alice_cardio):
    _alice, container = alice_cardio
    uid = container.labels["havre.uid"]  # its own, from Havre's range (havre/enclave/identities.py)
    assert int(uid) >= 2_000_000
    assert sh(container, "id -u").strip() == uid
    # the jupyter server itself (PID 1's tree) is not root either
    assert f"Uid:\t{uid}" in sh(container, "cat /proc/1/status")


def test_root_filesystem_is_read_only(alice_cardio):
    _alice, container = alice_cardio
    out = sh(container, "touch /usr/local/planted 2>&1; echo rc=$?")
    assert "Read-only file system" in out and "rc=1" in out
    root = [line for line in sh(container, "cat /proc/mounts").splitlines() if " / " in line]
    assert root and " ro," in root[0]
    # the writable places are the tmpfs, the home and the outputs folder
    assert "rc=0" in sh(container, "touch /tmp/x ~/x ~/outputs/.probe; echo rc=$?")
    sh(container, "rm -f /tmp/x ~/x ~/outputs/.probe")


def test_pids_memory_and_cpu_limits_are_in_force(enclave, alice_cardio):
    _alice, container = alice_cardio
    limits = enclave.config.project("cardio").limits
    seen = container_limits(lambda path: read_file(container, path))  # cgroup v1 or v2
    assert seen.pids == limits.pids, seen
    assert seen.memory_bytes == limits.memory_bytes, seen
    assert seen.cpus == pytest.approx(limits.cpu), seen
    # try to exceed the pids limit: thread creation must fail before it
    code, out = container.exec_run(
        [
            "python3",
            "-c",
            "import threading, time\n"
            "n = 0\n"
            "try:\n"
            f"    for _ in range({limits.pids + 100}):\n"
            "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1\n"
            "except RuntimeError:\n"
            "    pass\n"
            "print(n)\n",
        ]
    )
    started = int(out.decode().strip().splitlines()[-1])
    assert started < limits.pids


def test_no_docker_socket_and_no_proxy_secret(alice_cardio):
    _alice, container = alice_cardio
    out = sh(container, "ls /var/run/docker.sock /run/docker.sock 2>&1; env")
    assert "No such file" in out
    assert "CONFIGPROXY_AUTH_TOKEN" not in out
    assert "HAVRE_PROJECT=cardio" in out


def test_container_config_matches_the_policy(enclave, alice_cardio):
    """What the engine was told (the attacks above show it is also what happens)."""
    _alice, container = alice_cardio
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert container.attrs["Config"]["Image"] in enclave.config.allowed_images
    binds = {b.split(":")[1]: b for b in host["Binds"]}
    assert binds["/data"].endswith(":ro")
    assert not any("docker.sock" in b for b in host["Binds"])


#: the service containers `havre up` starts (havre/host/services.py), each hardened by
#: havre.enclave.hardening.service_hardening
SERVICE_ROLES = ("hub", "egress", "runner", "idp", "broker")


def test_every_service_container_of_the_stack_runs_hardened(enclave):
    """Seen by the kernel, in PID 1 of each running service container: no privilege gain, no
    capabilities (the broker: only its three), a read-only root, a process limit. Control: the
    broker's own capabilities show in the same field, so a zero elsewhere is read, not
    assumed."""
    found = {}
    for container in enclave.docker.containers.list(
        filters={"label": f"havre.enclave={enclave.config.name}"}
    ):
        role = container.labels.get("havre.role")
        if role in SERVICE_ROLES:
            found[role] = container
    assert set(found) == set(SERVICE_ROLES), sorted(found)
    for role, container in found.items():
        status = sh(container, "cat /proc/1/status")
        fields = dict(
            line.split(":", 1) for line in status.splitlines() if line.startswith(("Cap", "NoNew"))
        )
        assert fields["NoNewPrivs"].strip() == "1", role
        effective = int(fields["CapEff"].strip(), 16)
        if role == "broker":  # control: CHOWN (0), DAC_OVERRIDE (1), FOWNER (3)
            assert effective == 0b1011, (role, hex(effective))
        else:
            assert effective == 0, (role, hex(effective))
        out = sh(container, "touch /usr/planted 2>&1; echo rc=$?")
        assert "Read-only file system" in out and "rc=1" in out, (role, out)
        host = container.attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and host["Privileged"] is False, role
        assert host["PidsLimit"] and host["PidsLimit"] > 0, role
