"""Benchmark: the cost of one scrape of the egress service's ``/metrics`` against the
database's size (issue #19: "compute gauges from the database at scrape time with bounded
cost").

Fills SQLite databases (migrated by the service's migrations) with ``N`` released requests
(a request, two files with an SDC record, two reviews, a release, the audit events the
metrics read) by direct inserts (not timed), then times, as the median of ``--runs`` runs,
each in this one process:

- baseline: a scrape of an empty database;
- a warm scrape of each database (the collector has read every row already: the steady state
  of a running service);
- the first scrape of a worker that has just started (it reads at most ``BATCH`` rows a table);
- the same first scrape without the bound (``batch`` = every row), for comparison.

Usage::

    .venv/bin/python benchmarks/egress_metrics.py [--sizes 1000,20000] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from egress.monitoring.metrics import BATCH, EgressCollector  # noqa: E402
from egress.store.db import make_engine, migrate  # noqa: E402
from egress.store.models import (  # noqa: E402
    AuditEventRow,
    Release,
    Request,
    RequestFile,
    Review,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
CHECK = {"sdc": {"checked": True, "rule_counts": {"threshold": 1, "zeros": 0, "dominance": 0}}}


def fill(path: Path, n: int) -> object:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    requests, files, reviews, releases, events = [], [], [], [], []
    seq = 1000
    for i in range(n):
        rid = f"r{i:08d}"
        at = START + timedelta(minutes=i)
        requests.append(
            dict(
                id=rid,
                project=f"p{i % 20}",
                author="alice",
                title="t",
                state="released",
                reviews_required=2,
                round=1,
                created_at=at,
                updated_at=at,
                submitted_at=at,
            )
        )
        for j in range(2):
            files.append(
                dict(
                    request_id=rid,
                    group="g",
                    path=f"t{j}.csv",
                    sha256="0" * 64,
                    release_sha256="0" * 64,
                    size=1,
                    release_size=1,
                    kind="csv",
                    check=CHECK if j == 0 else {},
                    added_at=at,
                    changed_in_round=1,
                )
            )
        for k, reviewer in enumerate(("olivia", "oscar")):
            reviews.append(
                dict(
                    request_id=rid,
                    reviewer=reviewer,
                    round=1,
                    submitted_at=at + timedelta(hours=2 + k),
                )
            )
        releases.append(
            dict(
                request_id=rid,
                released_at=at + timedelta(days=1),
                released_by="oscar",
                record_json="{}",
            )
        )
        seq += 1
        events.append(
            dict(
                seq=seq,
                line="{}",
                event="SUBMITTED",
                actor="alice",
                project="p",
                request_id=rid,
                time=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            )
        )
    with engine.begin() as conn:
        for model, rows in (
            (Request, requests),
            (RequestFile, files),
            (Review, reviews),
            (Release, releases),
            (AuditEventRow, events),
        ):
            for start in range(0, len(rows), 5000):
                if rows[start : start + 5000]:
                    conn.execute(insert(model), rows[start : start + 5000])
    return engine


def scrape(collector: EgressCollector) -> float:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    began = time.perf_counter()
    generate_latest(registry)
    return time.perf_counter() - began


def median_of(runs: int, measure) -> tuple[float, list[float]]:
    times = [measure() for _ in range(runs)]
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,20000")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    clock = lambda: START + timedelta(days=400)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        empty = fill(Path(tmp) / "empty.db", 0)
        warm_empty = EgressCollector(empty, clock=clock)
        scrape(warm_empty)
        base, base_runs = median_of(args.runs, lambda: scrape(warm_empty))
        results.append(("baseline: empty database, warm", 0, base, base_runs))
        for n in sizes:
            engine = fill(Path(tmp) / f"db{n}.db", n)
            warm = EgressCollector(engine, clock=clock)
            while True:  # catch up first
                scrape(warm)
                if not warm._catching_up:
                    break
            t, runs = median_of(args.runs, lambda: scrape(warm))  # noqa: B023
            results.append(("warm scrape", n, t, runs))
            t, runs = median_of(args.runs, lambda: scrape(EgressCollector(engine, clock=clock)))  # noqa: B023
            results.append(
                (f"first scrape of a new worker (at most {BATCH} rows a table)", n, t, runs)
            )
            t, runs = median_of(
                args.runs,
                lambda: scrape(EgressCollector(engine, clock=clock, batch=10**9)),  # noqa: B023
            )
            results.append(("first scrape without the bound", n, t, runs))
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; median of {args.runs} runs"
    )
    print("| what | released requests | median | vs baseline |\n|---|---:|---:|---:|")
    for what, n, t, _ in results:
        print(f"| {what} | {n:,} | {t * 1000:.1f} ms | {t / base:.1f}x |")
    print(json.dumps([dict(what=w, n=n, median_s=t, runs_s=r) for w, n, t, r in results]))


if __name__ == "__main__":
    main()
