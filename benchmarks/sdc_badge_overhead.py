"""What comparing a file with the library's record costs on the service's real ``add_file`` path.

A 1,000 x 1,000 count CSV (every count 10 to 499) in ``outputs/cardio/s1/``, added to a
request through :meth:`egress.operations.facade.EgressService.add_file` (file checks, count rules,
record lookup, snapshot, database), alternately without a ``results.json`` (the baseline: nothing to
read) and with one holding 400 records (21 MB, each with 500 reasons), one of them this file's
(matching sha256). Median of several runs of each, in the same process, and their ratio.

    .venv/bin/python benchmarks/sdc_badge_overhead.py [--runs 5] [--output FILE]

Results: ``benchmarks/sdc-badge-README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egress.audit.signing import generate_key  # noqa: E402
from egress.domain.policy import Actor  # noqa: E402
from egress.files.sdc_badge import LibraryRecords  # noqa: E402
from egress.operations.facade import EgressService  # noqa: E402
from egress.store.content import ContentStore  # noqa: E402
from egress.store.db import make_engine, migrate  # noqa: E402
from havre.enclave.config import parse_enclave_config  # noqa: E402
from havre.sdc import SDCParams  # noqa: E402

ENCLAVE = {
    "enclave": {"name": "bench", "state_dir": "/srv/havre-bench"},
    "projects": {"cardio": {"title": "Cardio", "members": ["alice"]}},
    "output_checkers": ["olivia", "oscar"],
}


def _record(uid: str, name: str, sha256: str) -> dict:
    return {
        "uid": uid,
        "status": "pass",
        "type": "table",
        "properties": {},
        "files": [{"name": name, "sdc": {}, "sha256": sha256}],
        "outcome": {},
        "command": "",
        "summary": "",
        "timestamp": "",
        "comments": [],
        "exception": "",
        "fair": {},
        "havre": {
            "verdict": "pass",
            "statistic": "count",
            "reasons": ["r" * 100] * 500,
            "params": SDCParams().as_dict(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sdc-badge-bench-"))
    outputs = tmp / "outputs"
    folder = outputs / "cardio" / "s1"
    folder.mkdir(parents=True)
    n = 1000
    values = np.random.default_rng(0).integers(10, 500, size=(n, n))
    lines = ["k," + ",".join(f"c{j}" for j in range(n))]
    lines += [f"r{i}," + ",".join(map(str, row)) for i, row in enumerate(values)]
    data = ("\n".join(lines) + "\n").encode()
    (folder / "output_0.csv").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    results = {
        "version": "bench",
        "results": {
            f"output_{i}": _record(f"output_{i}", f"output_{i}.csv", "0" * 64)
            for i in range(1, 400)
        },
    }
    results["results"]["output_0"] = _record("output_0", "output_0.csv", digest)
    blob = json.dumps(results).encode()

    engine = make_engine(f"sqlite:///{tmp}/egress.sqlite")
    migrate(engine)
    key = tmp / "signing-key.pem"
    generate_key(key)
    svc = EgressService(
        engine,
        ContentStore(tmp / "content"),
        parse_enclave_config(ENCLAVE, source="benchmark"),
        outputs_root=lambda project: outputs / project,
        signing_key_path=key,
    )
    alice = Actor("alice", frozenset({"cardio"}), is_checker=False)
    rid = svc.create_request(alice, "cardio", "benchmark")["id"]

    def run(with_record: bool) -> float:
        if with_record:
            (folder / "results.json").write_bytes(blob)
        else:
            (folder / "results.json").unlink(missing_ok=True)
        start = time.perf_counter()
        entry = svc.add_file(alice, rid, "s1/output_0.csv")
        elapsed = time.perf_counter() - start
        expected = "matched" if with_record else "no_record"
        assert entry["check"]["library"]["status"] == expected, entry["check"]["library"]
        return elapsed

    run(False), run(True)  # warm up
    without, with_ = [], []
    for _ in range(args.runs):
        without.append(run(False))
        with_.append(run(True))
    lookups = []
    for _ in range(args.runs):
        records = LibraryRecords(
            lambda p: blob if p.endswith("results.json") else None, SDCParams()
        )
        start = time.perf_counter()
        records.for_file("s1/output_0.csv", digest)
        lookups.append(time.perf_counter() - start)
    report = {
        "cells": n * n,
        "csv_bytes": len(data),
        "results_json_bytes": len(blob),
        "runs": args.runs,
        "add_file_without_record_s": without,
        "add_file_with_record_s": with_,
        "median_without_s": statistics.median(without),
        "median_with_s": statistics.median(with_),
        "ratio": statistics.median(with_) / statistics.median(without),
        "record_lookup_median_s": statistics.median(lookups),
    }
    print(
        f"{n * n:,} cells, results.json {len(blob) / 1e6:.1f} MB: add_file median "
        f"{report['median_without_s']:.3f} s without a record, {report['median_with_s']:.3f} s "
        f"with the matching record (x{report['ratio']:.2f}); lookup alone "
        f"{report['record_lookup_median_s'] * 1000:.0f} ms"
    )
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
