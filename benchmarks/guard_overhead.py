"""What the download guard adds to a request to a notebook server.

Starts its own enclave (``havreguardbench``, state in a temporary folder, free loopback ports),
signs alice in, starts her cardio server and writes a small file. Then, from inside the hub
container (where the proxy runs), it sends the same JupyterLab request with alice's session
cookie, alternately

* through the guard (``127.0.0.1:8082``, the address the proxy forwards to), and
* straight to the notebook container (its address on the project network, as the proxy reached
  it before the guard existed),

``--requests`` times each (sequentially, one connection per request as the proxy does), and
prints and records the medians. Purges the enclave at the end.

    .venv/bin/python benchmarks/guard_overhead.py [--requests 300] [--output FILE]

See benchmarks/guard-README.md for recorded results.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from havre.enclave.ports import GUARD_PORT  # noqa: E402
from havre.host import layout, stack  # noqa: E402
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE  # noqa: E402
from havre.host.demo import init_demo  # noqa: E402
from tests.enclave_fixtures import free_port  # noqa: E402
from tests.integration.hub_client import HubUser  # noqa: E402

#: runs inside the hub container: time N alternating requests to the guard and the container
PROBE = r"""
import json, sys, time, urllib.request
guard, direct, path, cookie, host, n = sys.argv[1:7]
def once(base):
    req = urllib.request.Request(base + path, headers={"Cookie": cookie, "Host": host})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - t, len(body)
for base in (guard, direct):  # warm up both paths (token cache, imports)
    for _ in range(10):
        once(base)
out = {"guard": [], "direct": [], "bytes": 0}
for _ in range(int(n)):
    for name, base in (("guard", guard), ("direct", direct)):
        seconds, size = once(base)
        out[name].append(seconds)
        out["bytes"] = size
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="havreguardbench-"))
    config, users = init_demo(state, DEFAULT_NOTEBOOK_IMAGE, enclave_name="havreguardbench")
    passwords = {u.name: u.password for u in users}
    stack.down(config, purge=False)
    options = layout.StackOptions(port=free_port(), idp_port=free_port())
    try:
        url = stack.up(config, options)
        alice = HubUser(url, "alice", passwords["alice"]).login()
        assert alice.start_server("cardio").status_code in (201, 202)
        alice.wait_ready("cardio")
        out = alice.run_code("cardio", "open('outputs/bench.csv', 'w').write('a,b\\n' * 200)")
        assert out["error"] is None, out
        alice.open_server("cardio")
        cookie = "; ".join(f"{c.name}={c.value}" for c in alice.session.cookies)
        import docker

        client = docker.from_env(version="auto")
        notebook = client.containers.list(
            filters={"label": ["havre.enclave=havreguardbench", "havre.user=alice"]}
        )[0]
        address = next(iter(notebook.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        hub = layout.hub_container_name(config)
        path = "/user/alice/cardio/api/contents/outputs/bench.csv?content=1&format=text&type=file"
        host = url.split("//", 1)[1].rstrip("/")
        started = time.monotonic()
        result = subprocess.run(
            [
                "docker",
                "exec",
                hub,
                "python3",
                "-c",
                PROBE,
                f"http://127.0.0.1:{GUARD_PORT}",
                f"http://{address}:8888",
                path,
                cookie,
                host,
                str(args.requests),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        samples = json.loads(result.stdout)
        elapsed = time.monotonic() - started
    finally:
        stack.down(config, purge=True)

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "median_ms": round(1000 * statistics.median(ordered), 3),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 3),
        }

    guard, direct = summary(samples["guard"]), summary(samples["direct"])
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
        "git": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "requests_each": args.requests,
        "response_bytes": samples["bytes"],
        "request": "GET api/contents/<200-line CSV>?content=1 (JupyterLab opening a file)",
        "guard": guard,
        "direct": direct,
        "overhead_median_ms": round(guard["median_ms"] - direct["median_ms"], 3),
        "seconds": round(elapsed, 1),
        "samples": samples,
    }
    output = args.output or REPO / "benchmarks" / "results" / (
        f"guard-overhead-{datetime.now(UTC).date().isoformat()}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'path':<10} {'median ms':>10} {'p90 ms':>10}")
    print(f"{'direct':<10} {direct['median_ms']:>10.2f} {direct['p90_ms']:>10.2f}")
    print(f"{'guard':<10} {guard['median_ms']:>10.2f} {guard['p90_ms']:>10.2f}")
    print(f"overhead (median): {record['overhead_median_ms']:.2f} ms; written to {output}")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
