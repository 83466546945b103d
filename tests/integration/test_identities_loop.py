"""An enclave with ``project_filesystems: loop`` (issue #14), end to end on the real engine:
a server's home and outputs are on its project's own filesystem, so its free-inode count
doesn't move when another project's server creates files (control: the shared host
filesystem's count does). After a simulated reboot (the mounts gone, the containers still
there), ``havre up`` mounts them again and replaces the containers that mount ``projects/``,
so a new server still writes into the project's filesystem, not the folder underneath."""

from __future__ import annotations

import os
import subprocess

import pytest

from havre.host import layout, stack
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.demo import demo_config_text, init_demo
from havre.host.project_filesystems import (
    is_mountpoint,
    loop_problem,
    mount_path,
    release_project_filesystem,
)
from tests.enclave_fixtures import ENCLAVE_NAME, free_port
from tests.integration.hub_client import HubUser

pytestmark = pytest.mark.docker

COUNT = "import os; print(os.statvfs('/home/researcher').f_ffree, os.stat('.').st_dev)"


@pytest.fixture(scope="module")
def loop_enclave(docker_client, tmp_path_factory):
    problem = loop_problem()
    if problem:
        pytest.skip(f"per-project filesystems need loop devices: {problem}")
    state = tmp_path_factory.mktemp("loop-state").resolve()
    name = f"{ENCLAVE_NAME}l"[:20]
    text = demo_config_text(state, DEFAULT_NOTEBOOK_IMAGE, name, 5)
    text = text.replace(
        "enclave:\n",
        "enclave:\n  project_filesystems: loop\n  project_filesystem_size: 256M\n",
        1,
    )
    assert "project_filesystems: loop" in text
    (state / "enclave.yaml").write_text(text)
    config, users = init_demo(state, DEFAULT_NOTEBOOK_IMAGE, enclave_name=name)
    assert config.project_filesystems == "loop"
    stack.down(config, purge=False)
    options = layout.StackOptions(port=free_port(), idp_port=free_port())
    url = stack.up(config, options)
    passwords = {u.name: u.password for u in users}
    try:
        yield config, options, url, passwords
    finally:
        stack.down(config, purge=True)
        for slug in config.projects:  # purge releases them; again in case it failed early
            release_project_filesystem(config.state_dir, config.project_dir(slug), slug)


def _count(user: HubUser, project: str) -> tuple[int, int]:
    out = user.run_code(project, COUNT)
    assert out["error"] is None, out
    ffree, dev = out["stdout"].split()
    return int(ffree), int(dev)


def test_servers_live_on_their_projects_filesystem_and_survive_a_reboot(loop_enclave):
    config, options, url, passwords = loop_enclave
    for slug in config.projects:
        for name in ("homes", "outputs"):
            assert is_mountpoint(config.project_dir(slug) / name)
    carol = HubUser(url, "carol", passwords["carol"]).login()
    for project in ("cardio", "diabetes"):
        r = carol.start_server(project)
        assert r.status_code in (201, 202), r.text
    for project in ("cardio", "diabetes"):
        carol.wait_ready(project)
    try:
        before_b, dev_b = _count(carol, "diabetes")
        out = carol.run_code(
            "cardio", "[open(f'.x{k}', 'w').close() for k in range(500)]; print('made')"
        )
        assert out["stdout"].strip() == "made", out
        after_b, _ = _count(carol, "diabetes")
        after_a, dev_a = _count(carol, "cardio")
        print(f"\ndiabetes f_ffree {before_b} -> {after_b}; devices {dev_a} {dev_b}")
        assert dev_a != dev_b
        assert abs(after_b - before_b) < 50  # cardio's 500 files don't show in diabetes
        host = config.project_dir("cardio") / "homes" / "carol"
        assert os.stat(host).st_dev == os.stat(mount_path(config.state_dir, "cardio")).st_dev
        # control: on the host filesystem underneath, the same 500 files do show
        probe = config.state_dir / "probe"
        probe.mkdir()
        free = os.statvfs(config.state_dir).f_ffree
        for k in range(500):
            (probe / f"{k}").touch()
        assert os.statvfs(config.state_dir).f_ffree <= free - 400
    finally:
        for project in ("cardio", "diabetes"):
            carol.stop_server(project)

    # a "reboot": the mounts go, the broker and egress containers stay (Docker restarts them)
    ids = {c: stack_container(config, c).id for c in ("broker", "egress")}
    for slug in config.projects:
        release_project_filesystem(config.state_dir, config.project_dir(slug), slug)
    assert not is_mountpoint(config.project_dir("cardio") / "homes")
    assert stack.up(config, options) == url
    assert is_mountpoint(config.project_dir("cardio") / "homes")
    for c, old in ids.items():
        assert stack_container(config, c).id != old, f"{c} still sees the folders underneath"
    alice = HubUser(url, "alice", passwords["alice"]).login()
    r = alice.start_server("cardio")
    assert r.status_code in (201, 202), r.text
    try:
        alice.wait_ready("cardio")
        out = alice.run_code("cardio", "open('outputs/after.csv','w').write('a,b\\n'); print(1)")
        assert out["stdout"].strip() == "1", out
        on_fs = mount_path(config.state_dir, "cardio") / "outputs" / "after.csv"
        assert on_fs.exists()  # written into the project's filesystem
    finally:
        alice.stop_server("cardio")
    subprocess.run(["sync"], check=False)


def stack_container(config, role: str):
    import docker

    client = docker.from_env(version="auto")
    name = {"broker": layout.broker_container_name, "egress": layout.egress_container_name}[role]
    return client.containers.get(name(config))
