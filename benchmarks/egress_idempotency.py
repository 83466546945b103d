#!/usr/bin/env python3
"""What an ``Idempotency-Key`` costs a write, and what a retry costs (issue #13).

Run from the repository root::

    .venv/bin/python benchmarks/egress_idempotency.py            # 5 runs x 200 creates
    .venv/bin/python benchmarks/egress_idempotency.py --runs 3 --writes 50 --no-append

On one SQLite database (a file in a temporary directory, as ``make_engine`` sets it up), the
real :class:`egress.operations.facade.EgressService` creates drafts three ways, in the same process
and interleaved run by run: *baseline* ``create_request`` alone; *keyed* the same wrapped in
``idempotency_begin`` + ``idempotency_finish`` (what the web layer does for a write sent with
a key: two more short write transactions); *retry* ``idempotency_begin`` for a key already
answered (what a retried request costs: one transaction, nothing created). Reported: the
median time per write of each run's median, and the ratios to the baseline. Results are
appended to ``benchmarks/results/egress-idempotency.jsonl`` unless ``--no-append``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egress.operations.facade import EgressService, StoredAnswer  # noqa: E402
from egress.store.content import ContentStore  # noqa: E402
from egress.store.db import make_engine, migrate  # noqa: E402
from havre.enclave.config import parse_enclave_config  # noqa: E402
from tests.unit.egress.conftest import ACTORS, ENCLAVE  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "egress-idempotency.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    alice = ACTORS["alice"]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/egress.db")
        migrate(engine)
        svc = EgressService(
            engine, ContentStore(Path(tmp) / "content"), parse_enclave_config(ENCLAVE)
        )
        answer = StoredAnswer(201, "application/json", "", "{}")
        per_run: dict[str, list[float]] = {"baseline": [], "keyed": [], "retry": []}
        for run in range(args.runs):
            times: dict[str, list[float]] = {k: [] for k in per_run}
            for i in range(args.writes):
                start = time.perf_counter()
                svc.create_request(alice, "cardio", f"b{run}-{i}")
                times["baseline"].append(time.perf_counter() - start)
                key = f"bench-{run}-{i:06d}"
                start = time.perf_counter()
                assert svc.idempotency_begin(alice, key, "fp") is None
                svc.create_request(alice, "cardio", f"k{run}-{i}")
                svc.idempotency_finish(alice, key, answer)
                times["keyed"].append(time.perf_counter() - start)
                start = time.perf_counter()
                assert svc.idempotency_begin(alice, key, "fp") == answer
                times["retry"].append(time.perf_counter() - start)
            for name, values in times.items():
                per_run[name].append(statistics.median(values))
        engine.dispose()
    medians = {name: statistics.median(values) for name, values in per_run.items()}
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "runs": args.runs,
        "writes_per_run": args.writes,
        "median_ms": {k: round(v * 1000, 3) for k, v in medians.items()},
        "ratio_to_baseline": {k: round(v / medians["baseline"], 2) for k, v in medians.items()},
        "per_run_median_ms": {k: [round(x * 1000, 3) for x in v] for k, v in per_run.items()},
    }
    print(json.dumps(result, indent=2))
    if not args.no_append:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
