"""Benchmark: verify a 1,000,000-event audit log (target: under 5 s).

Generates a realistic JSON-lines audit log in a temporary directory (not timed), then times,
each as the median of ``--runs`` runs, in this one process:

- a baseline that only reads the file and ``json.loads`` every line: what a verifier that
  parses every event pays before it hashes anything;
- ``egress.audit.verify.verify_file`` against the head checkpoint (the real check: hashes every byte
  of every line, checks seq, prev_hash and the checkpoint, without re-serialising);
- the same with ``full_parse=True`` (also parses every event in full, as ``read_jsonl`` does);
- ``verify(read_jsonl(...))``, the generic path over rebuilt ``AuditEvent`` objects, hashing
  their re-serialised canonical form (what a store that keeps only the fields pays).

Usage::

    .venv/bin/python benchmarks/audit_verify.py [--events 1000000] [--runs 3] [--skip-generic]
"""

from __future__ import annotations

import argparse
import hashlib
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

from egress.audit.chain import Checkpoint, EventType, next_event  # noqa: E402
from egress.audit.file_log import read_jsonl  # noqa: E402
from egress.audit.verify import verify, verify_file  # noqa: E402

LOG_ID = "bench-egress-audit"
ACTORS = [f"user{n:03d}" for n in range(200)]
PROJECTS = [f"project-{n:02d}" for n in range(30)]
KINDS = [e for e in EventType if e is not EventType.LOG_OPENED]


def generate(path: Path, count: int) -> Checkpoint:
    """Write ``count`` chained events to ``path``; returns the head checkpoint."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    head = None
    with open(path, "wb", buffering=1 << 20) as f:
        for i in range(count):
            when = t0 + timedelta(milliseconds=37 * i)
            if i == 0:
                fields = {
                    "actor": "havre",
                    "event": EventType.LOG_OPENED,
                    "details": {"log_id": LOG_ID},
                }
            else:
                kind = KINDS[i % len(KINDS)]
                request = f"req-{i // 40:06d}"
                path_in_request = f"outputs/{request}/table_{i % 7}.csv"
                digest = hashlib.sha256(path_in_request.encode()).hexdigest()
                fields = {
                    "actor": ACTORS[i % len(ACTORS)],
                    "event": kind,
                    "project": PROJECTS[i % len(PROJECTS)],
                    "request_id": request,
                    "object": path_in_request,
                    "file_hashes": {path_in_request: digest},
                    "details": {
                        "size": 1000 + i % 5000,
                        "group": "tables",
                        "note": "Aufenthaltsdauer nach Station",
                    },
                }
            head = next_event(head, LOG_ID, time=when, **fields)
            f.write(head.to_line())
    assert head is not None
    return Checkpoint.of(head, LOG_ID)


def baseline(path: Path) -> int:
    """Read every line and json.loads it: what any parsing verifier must pay at least."""
    loads = json.loads
    count = 0
    with open(path, "rb") as f:
        for line in f:
            loads(line)
            count += 1
    return count


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-generic", action="store_true", help="don't time verify(read_jsonl)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="havre-audit-bench-") as tmp:
        path = Path(tmp) / "audit.jsonl"
        start = time.perf_counter()
        head = generate(path, args.events)
        gen_s = time.perf_counter() - start
        size = path.stat().st_size
        print(
            f"generated {args.events:,} events, {size / 1e6:.1f} MB "
            f"({size / args.events:.0f} bytes/event) in {gen_s:.1f} s (not timed)"
        )
        baseline(path)  # warm the page cache, so every timed run reads from memory alike

        load_before = os.getloadavg()[0]
        rows = []

        def run(name, fn):
            median, runs, result = timed(fn, args.runs)
            if hasattr(result, "ok"):
                assert result.ok and result.events_checked == args.events, result
            else:
                assert result == args.events
            rows.append((name, median, runs))
            return median

        base_s = run("baseline: read + json.loads", lambda: baseline(path))
        ver_s = run(
            "verify_file (with head checkpoint)",
            lambda: verify_file(path, LOG_ID, expected_head=head),
        )
        full_s = run(
            "verify_file, full_parse=True",
            lambda: verify_file(path, LOG_ID, expected_head=head, full_parse=True),
        )
        if not args.skip_generic:
            run(
                "verify(read_jsonl(...)), generic path",
                lambda: verify(read_jsonl(path), LOG_ID, expected_head=head),
            )
        load_after = os.getloadavg()[0]

    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} -> {load_after:.1f}; median of {args.runs} runs"
    )
    for name, median, runs in rows:
        per = median / args.events * 1e6
        all_runs = ", ".join(f"{r:.2f}" for r in runs)
        print(f"  {name:40s} {median:6.2f} s  ({per:.2f} us/event; runs: {all_runs})")
    scaled = "" if args.events == 1_000_000 else " (not 1,000,000 events: scale accordingly)"
    print(
        f"  verify_file / baseline: {ver_s / base_s:.2f}x; full_parse / baseline: "
        f"{full_s / base_s:.2f}x; target < 5 s: {'met' if ver_s < 5 else 'NOT met'}{scaled}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
