"""What the download guard's sign-in check adds to a static asset.

Jupyter Server serves static assets (JupyterLab's bundles, lab extensions, themes) without a
login; the guard asks the server's ``api/me`` with the request's cookies before it forwards
one (spawner/download_guard.py). This measures that extra round trip, in one process on
loopback, with a tornado upstream that plays the notebook server (a 20 KiB asset, a small JSON
answer, an ``api/me`` that knows one cookie), interleaving three kinds of request:

* ``direct``: the asset straight from the upstream (no guard: the baseline);
* ``guard, no check``: ``api/contents/...`` through the guard (allow-list only; the server
  checks the login itself);
* ``guard, sign-in check``: the asset through the guard (allow-list and the ``api/me`` check).

Sequential requests, one connection each (as the proxy makes them), after a warm-up; the
median of each run's median over ``--runs`` runs, and the ratios against the baseline measured
in the same process.

    .venv/bin/python benchmarks/guard_login_probe.py [--requests 400] [--runs 5] [--output FILE]

See benchmarks/guard-README.md for recorded results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tornado import httpclient, httpserver, web  # noqa: E402

from spawner.download_guard import DownloadGuard  # noqa: E402

PREFIX = "/user/alice/cardio/"
COOKIE = "jupyterhub-user-alice-cardio=signed-in"
ASSET = b"x" * 20 * 1024


class Me(web.RequestHandler):
    def get(self) -> None:
        if COOKIE not in self.request.headers.get("Cookie", ""):
            raise web.HTTPError(403)
        self.write({"identity": {"username": "alice"}})


class Static(web.RequestHandler):
    def get(self, _rest: str) -> None:
        self.set_header("Content-Type", "application/javascript")
        self.write(ASSET)


class Contents(web.RequestHandler):
    def get(self, rest: str) -> None:
        self.write({"name": rest, "type": "file", "content": "a,b\n1,2\n"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(requests: int, runs: int) -> dict[str, list[float]]:
    app = web.Application(
        [
            (PREFIX + "api/me", Me),
            (PREFIX + "static/(.*)", Static),
            (PREFIX + "api/contents/(.*)", Contents),
        ]
    )
    port = free_port()
    upstream = httpserver.HTTPServer(app)
    upstream.listen(port, "127.0.0.1")
    guard = DownloadGuard("127.0.0.1", free_port())
    guard.routes.register(PREFIX, f"http://127.0.0.1:{port}")
    client = httpclient.AsyncHTTPClient(force_instance=True)
    kinds = {
        "direct": f"http://127.0.0.1:{port}{PREFIX}static/lab/main.js",
        "guard_no_check": f"{guard.url}{PREFIX}api/contents/outputs/t.csv",
        "guard_sign_in_check": f"{guard.url}{PREFIX}static/lab/main.js",
    }

    async def once(url: str) -> float:
        started = time.perf_counter()
        response = await client.fetch(
            url, headers={"Cookie": COOKIE, "Connection": "close"}, raise_error=False
        )
        elapsed = time.perf_counter() - started
        assert response.code == 200, (url, response.code)
        return elapsed

    medians: dict[str, list[float]] = {name: [] for name in kinds}
    try:
        for url in kinds.values():  # warm up
            for _ in range(50):
                await once(url)
        for _ in range(runs):
            samples: dict[str, list[float]] = {name: [] for name in kinds}
            for _ in range(requests):
                for name, url in kinds.items():
                    samples[name].append(await once(url))
            for name, values in samples.items():
                medians[name].append(statistics.median(values))
    finally:
        client.close()
        guard.stop()
        upstream.stop()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    medians = asyncio.run(measure(args.requests, args.runs))
    result = {name: round(1000 * statistics.median(values), 3) for name, values in medians.items()}
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "git": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "requests_each_per_run": args.requests,
        "runs": args.runs,
        "median_of_run_medians_ms": result,
        "ratio_sign_in_check_vs_direct": round(result["guard_sign_in_check"] / result["direct"], 2),
        "ratio_sign_in_check_vs_guard_no_check": round(
            result["guard_sign_in_check"] / result["guard_no_check"], 2
        ),
        "run_medians_ms": {k: [round(1000 * v, 3) for v in vs] for k, vs in medians.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    output = args.output or REPO / "benchmarks" / "results" / (
        f"guard-login-probe-{datetime.now(UTC).date().isoformat()}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'request':<22} {'median ms':>10}")
    for name, value in result.items():
        print(f"{name:<22} {value:>10.3f}")
    print(
        f"sign-in check vs direct: {record['ratio_sign_in_check_vs_direct']}x; "
        f"vs guard without the check: {record['ratio_sign_in_check_vs_guard_no_check']}x; "
        f"written to {output}"
    )


if __name__ == "__main__":
    main()
