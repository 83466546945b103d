#!/usr/bin/env python3
"""Concurrent server starts on one Docker engine against the three-engine Swarm test cluster.

Run from the repository root, as root, with the notebook image built::

    .venv/bin/python benchmarks/cluster_spawn.py --spawns 10 --rounds 3

It builds a test cluster of its own (``tests/cluster/engines.py``: a manager and two workers,
each an engine in its own network namespace), loads the notebook image into the workers and
labels both as holding the benchmark project's data. Then, interleaved round by round:

* **one engine**: N notebook containers started at once on worker 1's engine, with the
  single-host hardening (``hardened_host_config``) on an internal bridge;
* **cluster**: N Swarm services created at once on the manager with the cluster mode's spec
  (``havre.broker.policy.server_service_spec``: ``swarm_task_hardening``, placement on the
  labelled workers), on an internal attachable overlay, which Swarm spreads over the two
  workers.

Each server runs ``jupyter server`` (the notebook image, HOME=/tmp); its ready time is from
the moment the start is asked until its log says the server is running (polled every 0.2 s).
CPU-seconds per spawn: the engines' own processes (dockerd and containerd of every node) plus
the containers' cgroups (each node's ``--cgroup-parent`` in cgroup v1 ``cpuacct``), over the
round, divided by N. A start that fails (its call to the engine raises, or its server is not
ready within 300 s) is counted and listed apart, with its reason: the medians and p95 are of
the starts that became ready only (:func:`summarize`). The three engines share this
machine's CPUs (and other work on it): the ready times of the cluster are not those of three
hosts; CPU-seconds per spawn are the comparable figure. Load averages are recorded with the
results in ``benchmarks/results/cluster-spawn-<date>-<spawns>x<rounds>.json``. A benchmark,
not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from havre.broker.policy import BrokerRequest, server_service_spec  # noqa: E402
from havre.enclave.config import parse_enclave_yaml  # noqa: E402
from havre.enclave.config.cluster import INSECURE_TEST_FLAG  # noqa: E402
from havre.enclave.hardening import hardened_host_config  # noqa: E402
from havre.enclave.networks import project_network_spec, project_overlay_spec  # noqa: E402
from tests.cluster import engines  # noqa: E402

IMAGE = "havre/notebook:0.1.0"
COMMAND = ["jupyter", "server", "--ip=0.0.0.0", "--port=8888", "--ServerApp.token=bench"]
READY = "is running at"
#: seconds a server is given to say it runs before its start counts as failed
READY_WITHIN = 300

#: one start's outcome: its ready time in seconds, or why it failed
Sample = float | str


def config(manager: str):
    os.environ[INSECURE_TEST_FLAG] = "1"
    return parse_enclave_yaml(
        "enclave: {name: hb, state_dir: /var/tmp/havre-bench}\n"
        f"images: {{allowed: ['{IMAGE}'], default: '{IMAGE}'}}\n"
        "projects:\n  bench: {title: Bench, members: [u00], data_path: /var/tmp/havre-bench-data}\n"
        f"cluster: {{manager: '{manager}', insecure_test_unencrypted_overlay: true}}\n"
    )


def cpu_seconds(cluster: engines.Cluster) -> float:
    """CPU time so far of the engines' processes and of their containers' cgroups."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in cluster.nodes:
        pid = node.pid()
        pids = [pid] if pid else []
        children = Path(f"/proc/{pid}/task/{pid}/children") if pid else None
        if children and children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for p in pids:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        usage = Path(f"/sys/fs/cgroup/cpuacct/{node.cgroup_parent.strip('/')}/cpuacct.usage")
        if usage.exists():
            total += int(usage.read_text()) / 1e9
    return total


def wait_logs(client: docker.APIClient, ident: str, start: float, service: bool) -> float:
    """Seconds from ``start`` until the log of container or service ``ident`` says the server
    runs; TimeoutError after READY_WITHIN seconds."""
    deadline = start + READY_WITHIN
    while time.monotonic() < deadline:
        try:
            raw = (
                client.service_logs(ident, stdout=True, stderr=True)
                if service
                else (client.logs(ident, stdout=True, stderr=True))
            )
            text = b"".join(raw).decode(errors="replace") if service else raw.decode()
            if READY in text:
                return time.monotonic() - start
        except docker.errors.APIError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready within {READY_WITHIN} s")


def failure(err: BaseException) -> str:
    """A failed start's reason, as the results list it."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def round_one_engine(cluster, n: int) -> list[Sample]:
    node = cluster.workers[0]
    client = docker.APIClient(base_url=node.url, version="auto")
    enclave = config(cluster.manager.url)
    project = enclave.project("bench")
    net = "hb-bench-bridge"
    try:
        client.inspect_network(net)
    except docker.errors.NotFound:
        client.create_network(net, **project_network_spec(net, "hb", "bench"))
    host = hardened_host_config(project, network=net)
    times: list[Sample] = ["never started"] * n
    names = [f"hb-one-{i}" for i in range(n)]
    barrier = threading.Barrier(n)

    def start(i: int) -> None:
        try:
            barrier.wait()
            t0 = time.monotonic()
            created = client.create_container(
                IMAGE,
                COMMAND,
                name=names[i],
                user="1000:1000",
                environment={"HOME": "/tmp"},
                host_config=client.create_host_config(**host),
            )
            client.start(created["Id"])
            times[i] = wait_logs(client, created["Id"], t0, service=False)
        except Exception as err:  # e.g. the engine's API timing out under load: a failed start
            barrier.abort()
            times[i] = failure(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in names:
        try:
            client.remove_container(name, force=True)
        except docker.errors.NotFound:  # its start failed before the engine made it
            pass
    client.close()
    return times


def round_cluster(cluster, n: int) -> list[Sample]:
    client = docker.APIClient(base_url=cluster.manager.url, version="auto")
    enclave = config(cluster.manager.url)
    net = enclave.network_name("bench")
    try:
        client.inspect_network(net)
    except docker.errors.NotFound:
        client.create_network(net, **project_overlay_spec(net, "hb", "bench", encrypted=False))
    times: list[Sample] = ["never started"] * n
    ids: list[str] = [""] * n
    barrier = threading.Barrier(n)

    def start(i: int) -> None:
        try:
            request = BrokerRequest("hub", "server.start", f"u{i:02d}", "bench")
            spec = server_service_spec(enclave, request, identity=(1000, 1000))
            container = spec["task_template"]["ContainerSpec"]
            container["Command"] = COMMAND
            container["Mounts"] = [m for m in container["Mounts"] if m["Type"] == "tmpfs"]
            container["Env"] = ["HOME=/tmp"]
            container.pop("Dir", None)
            spec["task_template"]["Placement"]["Constraints"][1] = "node.labels.havre.bench==true"
            barrier.wait()
            t0 = time.monotonic()
            ids[i] = client.create_service(**spec)["ID"]
            times[i] = wait_logs(client, ids[i], t0, service=True)
        except Exception as err:  # e.g. the engine's API timing out under load: a failed start
            barrier.abort()
            times[i] = failure(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ident in ids:
        if ident:
            client.remove_service(ident)
    client.close()
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summarize(samples: Sequence[Sample]) -> dict[str, object]:
    """One mode's ready times: median and p95 of the starts that became ready (a number of
    seconds) only; the failed ones (a reason) counted and listed apart, never in the figures.
    ``samples`` are the ready times alone, in the order of the starts."""
    ready = [s for s in samples if not isinstance(s, str)]
    failures = [s for s in samples if isinstance(s, str)]
    return {
        "ready_median_s": statistics.median(ready) if ready else None,
        "ready_p95_s": p95(ready) if ready else None,
        "ready": len(ready),
        "failed": len(failures),
        "failures": failures,
        "samples": ready,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spawns", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default benchmarks/results/cluster-spawn-DATE-NxR.json)",
    )
    args = parser.parse_args()
    lacking = engines.missing_capability()
    if lacking:
        print(f"cannot run: {lacking}", file=sys.stderr)
        return 2
    name = f"hb{os.getpid() % 10000}"
    cluster = engines.up(name, nodes=3)
    samples: dict[str, list[Sample]] = {"one engine": [], "cluster": []}
    cpu: dict[str, list[float]] = {"one engine": [], "cluster": []}
    load = []
    try:
        cluster.load_images([IMAGE], cluster.workers)
        for worker in cluster.workers:
            cluster.label_node(worker, **{"havre.bench": "true"})
        for number in range(1, args.rounds + 1):
            for mode, run in (("one engine", round_one_engine), ("cluster", round_cluster)):
                load.append(os.getloadavg())
                before = cpu_seconds(cluster)
                times = run(cluster, args.spawns)
                time.sleep(3)  # the removals' own work is part of the round's cost
                cpu[mode].append((cpu_seconds(cluster) - before) / args.spawns)
                samples[mode].extend(
                    f"round {number}: {t}" if isinstance(t, str) else t for t in times
                )
    finally:
        left = cluster.down()
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "spawns": args.spawns,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_averages": load,
        "left_behind": left,
        "modes": {},
    }
    print(
        f"{'mode':<12} {'median s':>9} {'p95 s':>7} {'CPU-s/spawn':>12} {'failed':>7}"
        f"  (N={args.spawns}; the figures are of the ready starts only)"
    )
    for mode, times in samples.items():
        row = {
            **summarize(times),
            "cpu_seconds_per_spawn_median": statistics.median(cpu[mode]),
            "cpu_per_round": cpu[mode],
        }
        result["modes"][mode] = row
        print(
            f"{mode:<12} {row['ready_median_s'] or 0:9.2f} {row['ready_p95_s'] or 0:7.2f} "
            f"{row['cpu_seconds_per_spawn_median']:12.2f} {row['failed']:>7}"
        )
        for reason in row["failures"]:
            print(f"  failed: {reason}")
    base = result["modes"]["one engine"]["ready_median_s"]
    if base:
        ratio = (result["modes"]["cluster"]["ready_median_s"] or 0) / base
        result["cluster_over_one_engine_median"] = ratio
        print(f"cluster / one engine (median ready): {ratio:.2f}")
    out = args.out or (
        REPO
        / "benchmarks"
        / "results"
        / f"cluster-spawn-{dt.date.today()}-{args.spawns}x{args.rounds}.json"
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
