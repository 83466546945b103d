"""A test cluster on one machine: N Docker engines, each in its own network namespace.

Each node is a network namespace joined to a test bridge of its own by a veth pair (no
default route inside: the nodes reach each other and the host's bridge address, nothing
else), and a ``dockerd`` started inside it with ``nsenter --net=/var/run/netns/NODE`` (not
``ip netns exec``, which remounts ``/sys`` so the engine fails with "Devices cgroup isn't
mounted") with its own data root, exec root, socket, pid file, cgroup parent and ``--bip``.
The host's ``FORWARD`` policy is DROP and bridged traffic goes through iptables, so the bridge
gets one ``FORWARD -i BR -o BR -j ACCEPT`` rule, removed at teardown. Node 1 is the swarm
manager; the others join as workers.

Teardown leaves nothing: the engines (and their containers) stopped, processes left in the
namespaces killed, mounts under the data and exec roots unmounted, the roots removed, the
namespaces, veths, bridge, cgroups and the iptables rule deleted. ``up`` writes a state file
(``/run/havre-test-cluster-NAME.json``) so that ``down`` from another process (the CLI,
``scripts/test-cluster.sh down``) finds everything, even after a crashed run.

Used by the session fixture in ``tests/cluster/conftest.py`` and by
``scripts/test-cluster.sh up|down`` (``python -m tests.cluster.engines``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: where the state files of running test clusters are written
STATE_DIR = Path("/run")
#: the engines' data roots live under here (overlay2 needs a real file system, not tmpfs)
DATA_BASE = Path("/var/lib/havre-test-cluster")
#: test bridges use a /24 of 198.18.0.0/15 (RFC 2544, benchmarking: never routed anywhere)
BRIDGE_RANGE = ipaddress.ip_network("198.18.0.0/16")
#: each engine's docker0 (``--bip``) takes a /24 of 10.(200 + node).X.0
BIP_SECOND_OCTET = 200
#: the swarm's overlay networks are carved from this pool (inside the namespaces only)
OVERLAY_POOL_SECOND_OCTET = 210
#: swarm ports between nodes: control (TCP), gossip (TCP and UDP), VXLAN data (UDP)
SWARM_PORTS = {"control": 2377, "gossip": 7946, "vxlan": 4789}


class ClusterError(RuntimeError):
    """The test cluster could not be built or torn down; the message says which step."""


def missing_capability() -> str | None:
    """A sentence naming what this machine lacks for a test cluster, or ``None``."""
    if os.geteuid() != 0:
        return "a test cluster needs root (network namespaces, veth pairs, iptables)"
    for tool in ("ip", "iptables", "nsenter", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"a test cluster needs the `{tool}` command"
    probe = f"hvprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"this machine can't make network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    listed = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    if listed.returncode != 0:
        return f"this machine has no usable iptables: {listed.stderr.strip()}"
    return None


def _run(args: Sequence[str], *, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise ClusterError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout}")
    return done


@dataclass
class Node:
    """One engine of the test cluster."""

    name: str  #: also the network namespace's name
    index: int  #: 1 is the manager
    address: str  #: on the test bridge
    bip: str  #: the engine's docker0 (CIDR)
    host_veth: str
    data_root: str
    exec_root: str
    socket: str
    pidfile: str
    log: str
    cgroup_parent: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def role(self) -> str:
        return "manager" if self.index == 1 else "worker"

    def docker(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run the Docker client against this engine."""
        return _run(["docker", "-H", self.url, *args], check=check, **kwargs)

    def nsenter(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in this node's network namespace (the host's other namespaces)."""
        return _run(["nsenter", f"--net=/var/run/netns/{self.name}", *args], check=check)

    def shell_wrapper(self, path: Path) -> Path:
        """Write ``path``: a ``/bin/sh`` that runs its commands in this node's network
        namespace, for an Ansible inventory host standing for this node
        (``ansible_shell_executable`` with the local connection)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\nexec nsenter --net=/var/run/netns/{self.name} /bin/sh "$@"\n')
        path.chmod(0o755)
        return path

    def pid(self) -> int | None:
        try:
            return int(Path(self.pidfile).read_text().strip())
        except (OSError, ValueError):
            return None


@dataclass
class Cluster:
    """A test cluster's names and addresses: everything teardown needs, kept in a state file."""

    name: str
    bridge: str
    subnet: str
    bridge_address: str
    nodes: list[Node] = field(default_factory=list)
    forward_rule: list[str] = field(default_factory=list)
    swarm: bool = False

    # --- lookup -------------------------------------------------------------------------------

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    @property
    def state_file(self) -> Path:
        return state_file(self.name)

    def save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, name: str) -> Cluster:
        raw = json.loads(state_file(name).read_text())
        raw["nodes"] = [Node(**node) for node in raw["nodes"]]
        return cls(**raw)

    # --- building -----------------------------------------------------------------------------

    def start_engines(self, timeout: float = 90) -> None:
        for node in self.nodes:
            for folder in (node.data_root, node.exec_root):
                Path(folder).mkdir(parents=True, exist_ok=True)
            # its own (empty) daemon.json: the machine's /etc/docker/daemon.json is the host
            # engine's, and a setting there (e.g. live-restore, which Swarm refuses) must not
            # leak into the test cluster's engines
            config = Path(node.data_root).parent / f"{node.name}-daemon.json"
            config.write_text("{}\n")
            with open(node.log, "ab") as log:
                subprocess.Popen(
                    [
                        "nsenter",
                        f"--net=/var/run/netns/{node.name}",
                        "dockerd",
                        "--config-file",
                        str(config),
                        "--data-root",
                        node.data_root,
                        "--exec-root",
                        node.exec_root,
                        "-H",
                        node.url,
                        "--pidfile",
                        node.pidfile,
                        "--bip",
                        node.bip,
                        "--cgroup-parent",
                        node.cgroup_parent,
                        "--containerd-namespace",
                        node.name,
                        "--containerd-plugins-namespace",
                        f"{node.name}-plugins",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.docker("info", "--format", "{{.ID}}", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    tail = Path(node.log).read_text(errors="replace")[-2000:]
                    raise ClusterError(f"engine {node.name} did not start: {tail}")
                time.sleep(0.5)

    def form_swarm(self) -> None:
        manager = self.manager
        pool = f"10.{OVERLAY_POOL_SECOND_OCTET}.0.0/16"
        manager.docker(
            "swarm",
            "init",
            "--advertise-addr",
            manager.address,
            "--listen-addr",
            f"{manager.address}:{SWARM_PORTS['control']}",
            "--default-addr-pool",
            pool,
            "--default-addr-pool-mask-length",
            "24",
        )
        self.swarm = True
        self.save()
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for worker in self.workers:
            worker.docker(
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                worker.address,
                "--listen-addr",
                f"{worker.address}:{SWARM_PORTS['control']}",
                f"{manager.address}:{SWARM_PORTS['control']}",
            )

    def node_ids(self) -> dict[str, str]:
        """The swarm node id of each engine (by node name)."""
        return {
            node.name: node.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
            for node in self.nodes
        }

    def label_node(self, node: Node, **labels: str) -> None:
        """Set swarm node labels (as Ansible does on a real cluster)."""
        args = []
        for key, value in labels.items():
            args += ["--label-add", f"{key}={value}"]
        node_id = node.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        self.manager.docker("node", "update", *args, node_id)

    # --- images -------------------------------------------------------------------------------

    def load_images(self, images: Iterable[str], nodes: Iterable[Node] | None = None) -> list[str]:
        """Copy images from the host engine into the nodes' engines, only where missing (same
        image id already present: nothing to do). Returns what was loaded, as ``node:image``."""
        targets = list(nodes) if nodes is not None else self.nodes
        images = list(images)
        if len(images) > 1:  # each image saved and loaded at the same time as the others
            with ThreadPoolExecutor(max_workers=len(images)) as pool:
                done = pool.map(lambda image: self.load_images([image], targets), images)
                return [item for loaded in done for item in loaded]
        loaded = []
        for image in images:
            wanted = _run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
            image_id = wanted.stdout.strip()
            missing = [
                node
                for node in targets
                if node.docker(
                    "image", "inspect", "--format", "{{.Id}}", image, check=False
                ).stdout.strip()
                != image_id
            ]
            if not missing:
                continue
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                archive = Path(tmp) / "image.tar"
                _run(["docker", "save", "-o", str(archive), image])
                loads = [
                    (
                        node,
                        subprocess.Popen(
                            ["docker", "-H", node.url, "load", "-q", "-i", str(archive)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            text=True,
                        ),
                    )
                    for node in missing
                ]
                for node, process in loads:
                    _, err = process.communicate(timeout=600)
                    if process.returncode != 0:
                        raise ClusterError(f"loading {image} into {node.name} failed: {err}")
                    loaded.append(f"{node.name}:{image}")
        return loaded

    # --- teardown -----------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything the cluster made; returns the problems met (empty when clean)."""
        problems: list[str] = []
        # services first (their tasks would be rescheduled), then every container, then the
        # engines, all at once: an engine's shutdown waits for its containers
        if self.swarm and _alive_pid(self.manager):
            names = self.manager.docker("service", "ls", "-q", check=False).stdout.split()
            if names:
                self.manager.docker("service", "rm", *names, check=False)
        removing = [
            subprocess.Popen(
                f"docker -H {node.url} ps -aq | xargs -r docker -H {node.url} rm -f",
                shell=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for node in self.nodes
            if _alive_pid(node)
        ]
        for process in removing:
            process.wait(timeout=120)
        pids = [pid for node in self.nodes if (pid := node.pid()) is not None and _alive(pid)]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            _kill_cgroup_processes(node.cgroup_parent)
        for node in self.nodes:
            _kill_namespace_processes(node.name)
        for node in self.nodes:
            for root in (node.exec_root, node.data_root):
                _unmount_under(root)
        # the data roots hold every loaded image's layers: removed all at once
        removing = [
            subprocess.Popen(["rm", "-rf", "--one-file-system", root])
            for node in self.nodes
            for root in (node.exec_root, node.data_root)
        ]
        for process in removing:
            process.wait(timeout=600)
        for node in self.nodes:
            for root in (node.exec_root, node.data_root, node.pidfile, node.socket):
                path = Path(root)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                if path.exists():
                    problems.append(f"{path} could not be removed")
            _remove_cgroups(node.cgroup_parent)
            if Path(f"/var/run/netns/{node.name}").exists():
                done = _run(["ip", "netns", "del", node.name], check=False)
                if done.returncode != 0:
                    problems.append(f"namespace {node.name}: {done.stderr.strip()}")
            _run(["ip", "link", "del", node.host_veth], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        if self.forward_rule:
            while _run(["iptables", "-C", *self.forward_rule], check=False).returncode == 0:
                _run(["iptables", "-D", *self.forward_rule])
        base = DATA_BASE / self.name
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(OSError):
            DATA_BASE.rmdir()
        self.state_file.unlink(missing_ok=True)
        return problems + leftovers(self)


def state_file(name: str) -> Path:
    return STATE_DIR / f"havre-test-cluster-{name}.json"


def leftovers(cluster: Cluster) -> list[str]:
    """Whatever of ``cluster`` is still on the machine (empty after a clean teardown)."""
    found = []
    links = _run(["ip", "-o", "link"], check=False).stdout
    for node in cluster.nodes:
        if Path(f"/var/run/netns/{node.name}").exists():
            found.append(f"namespace {node.name}")
        if f" {node.host_veth}@" in links or f" {node.host_veth}:" in links:
            found.append(f"veth {node.host_veth}")
        for path in (node.data_root, node.exec_root, node.socket, node.pidfile):
            if Path(path).exists():
                found.append(path)
        pid = node.pid()
        if pid is not None and _alive(pid):
            found.append(f"dockerd {pid}")
        for mount in _mounts():
            if mount.startswith((node.data_root, node.exec_root)):
                found.append(f"mount {mount}")
    if f" {cluster.bridge}:" in links:
        found.append(f"bridge {cluster.bridge}")
    if cluster.forward_rule:
        if _run(["iptables", "-C", *cluster.forward_rule], check=False).returncode == 0:
            found.append("iptables " + " ".join(cluster.forward_rule))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _alive_pid(node: Node) -> bool:
    pid = node.pid()
    return pid is not None and _alive(pid)


def _kill_cgroup_processes(parent: str) -> None:
    """Kill processes of containers an engine left behind (they live in its cgroup parent)."""
    pids = set()
    for procs in Path("/sys/fs/cgroup").glob(f"*/{parent.strip('/')}/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kill_namespace_processes(netns: str) -> None:
    """Kill what still runs in the namespace ``netns`` (shims of containers the engine left)."""
    listed = _run(["ip", "netns", "pids", netns], check=False)
    for line in listed.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(line), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _run(["ip", "netns", "pids", netns], check=False).stdout.split():
            return
        time.sleep(0.2)


def _mounts() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            points.append(line.split()[4].replace("\\040", " "))
    return points


def _unmount_under(root: str) -> None:
    prefix = root.rstrip("/") + "/"
    for point in sorted(
        (p for p in _mounts() if p == root or p.startswith(prefix)), key=len, reverse=True
    ):
        _run(["umount", "-l", point], check=False)


def _remove_cgroups(parent: str) -> None:
    """Remove the (empty) cgroup folders the engine made under its ``--cgroup-parent``."""
    base = Path("/sys/fs/cgroup")
    name = parent.strip("/")
    candidates = [base / name] + [d / name for d in base.iterdir() if d.is_dir()]
    for top in candidates:
        if not top.is_dir():
            continue
        for folder in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _free_slot() -> int:
    """A /24 of 198.18.0.0/16 (and matching engine bridges) that no route, address or other
    test cluster uses."""
    used = _run(["ip", "-o", "route", "show", "table", "all"], check=False).stdout
    used += _run(["ip", "-o", "addr"], check=False).stdout
    for third in range(18, 250):
        subnet = ipaddress.ip_network(f"198.18.{third}.0/24")
        bips = [f"10.{BIP_SECOND_OCTET + n}.{third}." for n in range(1, 10)]
        if f"198.18.{third}." in used or any(b in used for b in bips):
            continue
        if any(
            f'"198.18.{third}.0/24"' in p.read_text()
            for p in STATE_DIR.glob("havre-test-cluster-*.json")
        ):
            continue
        assert subnet.subnet_of(BRIDGE_RANGE)
        return third
    raise ClusterError("no free /24 in 198.18.0.0/16 for a test bridge")


def plan(name: str, nodes: int = 3) -> Cluster:
    """Names and addresses of a cluster called ``name`` (short: interface names have 15
    characters at most), without making anything."""
    if not name.isalnum() or len(name) > 8:
        raise ClusterError("a test cluster's name is 1-8 letters or digits")
    third = _free_slot()
    cluster = Cluster(
        name=name,
        bridge=f"{name}-br",
        subnet=f"198.18.{third}.0/24",
        bridge_address=f"198.18.{third}.1",
    )
    base = DATA_BASE / name
    for index in range(1, nodes + 1):
        node_name = f"{name}-n{index}"
        cluster.nodes.append(
            Node(
                name=node_name,
                index=index,
                address=f"198.18.{third}.{10 + index}",
                bip=f"10.{BIP_SECOND_OCTET + index}.{third}.1/24",
                host_veth=f"{name}-v{index}",
                data_root=str(base / f"n{index}" / "data"),
                exec_root=f"/run/{node_name}",
                socket=f"/run/{node_name}.sock",
                pidfile=str(base / f"n{index}" / "dockerd.pid"),
                log=str(base / f"n{index}" / "dockerd.log"),
                cgroup_parent=f"/{node_name}",
            )
        )
    cluster.forward_rule = ["FORWARD", "-i", cluster.bridge, "-o", cluster.bridge, "-j", "ACCEPT"]
    return cluster


def up(name: str, nodes: int = 3, images: Iterable[str] = ()) -> Cluster:
    """Build a cluster of ``nodes`` engines (node 1 the swarm manager); on any failure,
    everything made so far is removed before the error is raised."""
    if state_file(name).exists():
        raise ClusterError(
            f"a test cluster {name} already exists ({state_file(name)}): "
            f"`scripts/test-cluster.sh down {name}` removes it"
        )
    cluster = plan(name, nodes)
    for node in cluster.nodes:
        Path(node.log).parent.mkdir(parents=True, exist_ok=True)
    cluster.save()
    try:
        _run(["ip", "link", "add", cluster.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{cluster.bridge_address}/24", "dev", cluster.bridge])
        _run(["ip", "link", "set", cluster.bridge, "up"])
        _run(["iptables", "-I", *cluster.forward_rule])
        for node in cluster.nodes:
            _run(["ip", "netns", "add", node.name])
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    node.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    node.name,
                ]
            )
            _run(["ip", "link", "set", node.host_veth, "master", cluster.bridge, "up"])
            node.nsenter("ip", "addr", "add", f"{node.address}/24", "dev", "eth0")
            node.nsenter("ip", "link", "set", "eth0", "up")
            node.nsenter("ip", "link", "set", "lo", "up")
        cluster.start_engines()
        cluster.form_swarm()
        images = list(images)
        if images:
            cluster.load_images(images)
        cluster.save()
    except BaseException:
        cluster.down()
        raise
    return cluster


def down(name: str) -> list[str]:
    """Tear down the cluster called ``name`` from its state file."""
    if not state_file(name).exists():
        return []
    return Cluster.load(name).down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="test-cluster", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("up", help="make a cluster and print its engines' sockets")
    make.add_argument("name", nargs="?", default="hvc")
    make.add_argument("--nodes", type=int, default=3)
    make.add_argument("--image", action="append", default=[], help="load this image (repeat)")
    remove = sub.add_parser("down", help="remove a cluster and check that nothing is left")
    remove.add_argument("name", nargs="?", default="hvc")
    args = parser.parse_args(argv)
    lacking = missing_capability()
    if lacking:
        print(f"error: {lacking}", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            cluster = up(args.name, args.nodes, args.image)
            for node in cluster.nodes:
                print(f"{node.name}\t{node.role}\t{node.address}\tDOCKER_HOST={node.url}")
            return 0
        problems = down(args.name)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"left behind: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
