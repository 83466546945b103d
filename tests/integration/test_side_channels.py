"""Shared-filesystem and /proc side channels between two servers of one user in two projects
(issue #14): measured, printed, and, for free-inode counts, closed by per-project filesystems.

The free-inode channel: a sender in project A creates (bit 1) or doesn't create (bit 0) a batch
of empty files during each time slot; a receiver in project B reads ``statvfs(home).f_ffree``
just before and in the middle of each slot and decodes a drop as a 1. Measured twice with the
same probe: between carol's two real servers (homes on one shared host filesystem: the channel
works, the control) and between two containers with the servers' hardening whose homes are on
two per-project loop filesystems made by ``havre.host.project_filesystems`` (the channel is gone).

The /proc table lists what a server still reads of the host (values equal to the host's).
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from pathlib import Path

import pytest

from havre.host.project_filesystems import (
    ensure_project_filesystem,
    loop_problem,
    release_project_filesystem,
)
from tests.integration.servers import servers_running

pytestmark = pytest.mark.docker

SLOT = 0.5  # seconds per bit (file creation is slow on a loaded host)
BITS = 40
FILES = 400  # files per 1 bit

SENDER = """
import os, sys, time
d, t0, slot, bits, n = sys.argv[1:6]
t0, slot, n = float(t0), float(slot), int(n)
def until(t):
    while time.time() < t:
        time.sleep(0.002)
for i, b in enumerate(bits):
    start = t0 + i * slot
    until(start)
    if b == "1":
        for k in range(n):
            open(f"{d}/.cc{k}", "w").close()
    until(start + 0.7 * slot)
    if b == "1":
        for k in range(n):
            os.unlink(f"{d}/.cc{k}")
print("sent")
"""

RECEIVER = """
import json, os, sys, time
d, t0, slot, nbits = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
def until(t):
    while time.time() < t:
        time.sleep(0.002)
paths = {"home": d, "root": "/"}  # the home, and the container's own root filesystem
out = {k: [] for k in paths}
for i in range(nbits):
    start = t0 + i * slot
    until(start - 0.15 * slot)
    before = {k: os.statvfs(p).f_ffree for k, p in paths.items()}
    until(start + 0.6 * slot)
    for k, p in paths.items():
        out[k].append(before[k] - os.statvfs(p).f_ffree)
print(json.dumps(out))
"""


def _mutual_information(sent: list[int], got: list[int]) -> float:
    """Empirical mutual information (bits per symbol) between two binary sequences."""
    n = len(sent)
    mi = 0.0
    for a in (0, 1):
        for b in (0, 1):
            joint = sum(1 for s, g in zip(sent, got, strict=True) if s == a and g == b) / n
            pa = sum(1 for s in sent if s == a) / n
            pb = sum(1 for g in got if g == b) / n
            if joint > 0:
                mi += joint * math.log2(joint / (pa * pb))
    return mi


def _measure(sender, receiver, sender_dir: str, receiver_dir: str, seed: int) -> dict:
    rng = random.Random(seed)
    bits = "".join(rng.choice("01") for _ in range(BITS))
    t0 = time.time() + 3.0
    results: dict[str, object] = {}

    def run(name: str, container, code: str, *args: str) -> None:
        results[name] = container.exec_run(["python", "-c", code, *args])

    threads = [
        threading.Thread(
            target=run, args=("s", sender, SENDER, sender_dir, str(t0), str(SLOT), bits, str(FILES))
        ),
        threading.Thread(
            target=run, args=("r", receiver, RECEIVER, receiver_dir, str(t0), str(SLOT), str(BITS))
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    code_s, out_s = results["s"]
    code_r, out_r = results["r"]
    assert code_s == 0 and code_r == 0, (out_s, out_r)
    received = json.loads(out_r.decode().strip().splitlines()[-1])
    sent = [int(b) for b in bits]
    return {k: _decode(sent, drops, seed) for k, drops in received.items()}


def _decode(sent: list[int], drops: list[int], seed: int) -> dict:
    got = [1 if d >= FILES // 2 else 0 for d in drops]
    errors = sum(1 for s, g in zip(sent, got, strict=True) if s != g)
    mi = _mutual_information(sent, got)
    return {
        "errors": errors,
        "bit_error_rate": errors / BITS,
        "mutual_information_per_bit": round(mi, 3),
        "bits_per_second": round(mi / SLOT, 2),
        "drops_when_1": sorted(d for d, s in zip(drops, sent, strict=True) if s)[
            :: max(1, BITS // 8)
        ],
        "max_drop_when_1": max((d for d, s in zip(drops, sent, strict=True) if s), default=0),
        "max_drop_when_0": max((d for d, s in zip(drops, sent, strict=True) if not s), default=0),
        "seed": seed,
    }


@pytest.fixture(scope="module")
def carol_two_projects(enclave):
    with servers_running(enclave.user("carol"), ("cardio", "diabetes")) as carol:
        yield carol


def test_free_inode_channel_shared_filesystem_vs_per_project_filesystems(
    enclave, carol_two_projects, tmp_path
):
    a = enclave.notebook_container("carol", "cardio")
    b = enclave.notebook_container("carol", "diabetes")
    home = "/home/researcher"
    seed = random.SystemRandom().randrange(1 << 30)
    print(f"\nseed {seed}")
    shared = _measure(a, b, home, home, seed)
    for where, found in shared.items():
        print(f"shared host filesystem (carol's two real servers), read on {where}: {found}")
    # control: on one shared filesystem the channel carries information
    assert shared["home"]["mutual_information_per_bit"] >= 0.3, shared

    problem = loop_problem()
    if problem:
        pytest.skip(f"per-project filesystems need loop devices: {problem}")
    # the same probe between two containers with the servers' own hardening, whose homes are
    # on two per-project filesystems made as `havre up` makes them (project_filesystems: loop)
    state = tmp_path / "state"
    made: list[tuple[Path, str]] = []
    containers = []
    try:
        for container, slug in ((a, "pa"), (b, "pb")):
            project_dir = state / "projects" / slug
            project_dir.mkdir(parents=True)
            ensure_project_filesystem(state, project_dir, slug, 256 * 1024**2, [])
            made.append((project_dir, slug))
            uid, gid = container.attrs["Config"]["User"].split(":")
            home_dir = project_dir / "homes" / "carol"
            home_dir.mkdir(mode=0o700)
            os.chown(home_dir, int(uid), int(gid))
            hc = container.attrs["HostConfig"]
            containers.append(
                enclave.docker.containers.run(
                    container.image.id,
                    ["sleep", "300"],
                    detach=True,
                    user=f"{uid}:{gid}",
                    cap_drop=["ALL"],
                    security_opt=hc["SecurityOpt"],
                    read_only=True,
                    network_disabled=True,
                    volumes={str(home_dir): {"bind": home, "mode": "rw"}},
                    labels={"havre.enclave": enclave.config.name},
                    remove=True,
                )
            )
        loop = _measure(containers[0], containers[1], home, home, seed)
        for where, found in loop.items():
            print(f"per-project loop filesystems (same probe, same hardening), {where}: {found}")
        for found in loop.values():  # neither the home nor the container's root shows it
            assert found["mutual_information_per_bit"] < 0.1, loop
            assert found["max_drop_when_1"] < FILES // 2, loop
    finally:
        for c in containers:
            c.remove(force=True)
        for project_dir, slug in made:
            release_project_filesystem(state, project_dir, slug)


PROC_PROBE = """
import json, os
def first(path, n=4000):
    try:
        with open(path) as f:
            return f.read()[:n]
    except OSError as err:
        return f"<{type(err).__name__}>"
files = ["/proc/sys/kernel/random/boot_id", "/proc/stat", "/proc/meminfo", "/proc/loadavg",
         "/proc/uptime", "/proc/cpuinfo", "/proc/diskstats", "/proc/net/dev", "/proc/vmstat",
         "/proc/sys/fs/file-nr", "/proc/sys/fs/inode-nr", "/proc/pressure/cpu", "/proc/interrupts",
         "/proc/sys/kernel/hostname", "/proc/self/mountinfo", "/sys/fs/cgroup/memory.max"]
out = {p: first(p) for p in files}
out["pids visible"] = str(len([n for n in os.listdir("/proc") if n.isdigit()]))
print(json.dumps(out))
"""


def _host_view(path: str) -> str:
    try:
        return Path(path).read_text()[:4000]
    except OSError as err:
        return f"<{type(err).__name__}>"


def _same(path: str, inside: str, host: str) -> str:
    """'host-wide' when the server reads the host's value, 'own' otherwise."""
    if inside.startswith("<"):
        return "blocked"
    if path == "/proc/stat":  # btime (boot time) and the cpu lines are the host's
        return "host-wide" if inside.split("\n")[0].split()[:1] == ["cpu"] else "own"
    if path == "/proc/meminfo":
        return "host-wide" if inside.splitlines()[0] == host.splitlines()[0] else "own"
    if path in ("/proc/uptime", "/proc/loadavg"):
        a, b = float(inside.split()[0]), float(host.split()[0])
        return "host-wide" if abs(a - b) < 5 else "own"
    if path in ("/proc/sys/fs/file-nr", "/proc/sys/fs/inode-nr"):  # within 20% of the host's
        a, b = int(inside.split()[0]), int(host.split()[0])
        return "host-wide" if abs(a - b) <= 0.2 * b else "own"
    if path in ("/proc/vmstat", "/proc/interrupts", "/proc/diskstats", "/proc/pressure/cpu"):
        return "host-wide" if inside.split()[:1] == host.split()[:1] else "own"
    if path == "/proc/net/dev":  # the interfaces (names) after the two header lines
        names = [
            sorted(line.split(":")[0].strip() for line in t.splitlines()[2:])
            for t in (inside, host)
        ]
        return "host-wide" if names[0] == names[1] else "own"
    return "host-wide" if inside == host else "own"


def test_proc_host_wide_data_still_visible_from_a_server(enclave, carol_two_projects):
    out = carol_two_projects.run_code("cardio", PROC_PROBE)
    assert out["error"] is None, out
    seen = json.loads(out["stdout"])
    rows = []
    for path, inside in seen.items():
        if path == "pids visible":
            rows.append((path, inside, "own (pid namespace)"))
            continue
        verdict = _same(path, inside, _host_view(path))
        rows.append((path, inside.split("\n")[0][:50], verdict))
    print("\n/proc and /sys as a notebook server reads them:")
    for path, sample, verdict in rows:
        print(f"  {path:34} {verdict:20} {sample!r}")
    verdicts = {p: v for p, _, v in rows}
    # controls of the classification: the network and mount tables and the hostname are the
    # container's own (namespaced); the boot id is the host's
    assert verdicts["/proc/net/dev"] == "own"
    assert verdicts["/proc/self/mountinfo"] == "own"
    assert verdicts["/proc/sys/kernel/hostname"] == "own"
    assert verdicts["/proc/sys/kernel/random/boot_id"] == "host-wide"
    assert int(seen["pids visible"]) < 50  # the server's own processes only


def test_havre_up_gives_each_project_its_own_filesystem(tmp_path):
    """`prepare_state` with ``project_filesystems: loop`` (what `havre up` runs): each
    project's homes and outputs are on a filesystem of its own, with the folder plan on top;
    a second run changes nothing; existing files are carried over. Control: with the default
    (shared) both projects' folders report one filesystem."""
    problem = loop_problem()
    if problem:
        pytest.skip(f"per-project filesystems need loop devices: {problem}")
    from havre.enclave.config import parse_enclave_yaml
    from havre.host import layout

    def config(mode: str, state: Path):
        return parse_enclave_yaml(
            f"enclave: {{name: dfs, state_dir: {state}, project_filesystems: {mode},"
            " project_filesystem_size: 128M}\n"
            "images: {default: 'havre/notebook:0.1.0'}\n"
            "projects:\n  pa: {title: A, members: [alice]}\n  pb: {title: B, members: [alice]}\n"
        )

    shared = config("shared", tmp_path / "shared")
    layout.prepare_state(shared, [])
    devs = {os.stat(shared.project_dir(s) / "homes").st_dev for s in ("pa", "pb")}
    assert len(devs) == 1  # control: one filesystem for both projects

    loop = config("loop", tmp_path / "loop")
    (loop.project_dir("pa") / "homes" / "alice").mkdir(parents=True)
    (loop.project_dir("pa") / "homes" / "alice" / "kept.txt").write_text("kept")
    changes: list[str] = []
    try:
        layout.prepare_state(loop, changes)
        print("\n".join(changes))
        devs = {
            os.stat(loop.project_dir(s) / name).st_dev
            for s in ("pa", "pb")
            for name in ("homes", "outputs")
        }
        assert len(devs) == 2 and os.stat(tmp_path).st_dev not in devs
        assert (loop.project_dir("pa") / "homes" / "alice" / "kept.txt").read_text() == "kept"
        outputs = os.stat(loop.outputs_dir("pa"))
        assert oct(outputs.st_mode & 0o7777) == oct(0o3570) and outputs.st_uid == 1001
        again: list[str] = []
        layout.prepare_state(loop, again)
        assert again == [], again
        a = os.statvfs(loop.project_dir("pa") / "homes")
        b = os.statvfs(loop.project_dir("pb") / "homes")
        for k in range(200):
            (loop.project_dir("pa") / "homes" / f"f{k}").touch()
        assert os.statvfs(loop.project_dir("pb") / "homes").f_ffree == b.f_ffree
        assert os.statvfs(loop.project_dir("pa") / "homes").f_ffree <= a.f_ffree - 200
    finally:
        for slug in ("pa", "pb"):
            release_project_filesystem(loop.state_dir, loop.project_dir(slug), slug)
