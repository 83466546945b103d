"""What age encryption adds to a backup and to a verify.

Makes a synthetic enclave state folder in a temporary folder (``--mb`` MB of incompressible
home files, a small SQLite database, an audit log), then runs
``ansible/roles/havre_common/files/havre_archive.py`` for real, ``--runs`` times each,
interleaved: ``create --unencrypted`` (the baseline) and ``create --recipients-file`` (age),
then ``verify`` of each archive (the encrypted one with ``--identity``: decrypted whole first).
Prints and records the medians, p95s and the ratios encrypted / plain, with the machine's load.

    .venv/bin/python benchmarks/backup_encryption.py [--mb 200] [--runs 7] [--output FILE]

See benchmarks/backup-README.md for recorded results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from host_facts import cpu_model

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "ansible" / "roles" / "havre_common" / "files" / "havre_archive.py"


def make_state(root: Path, mb: int) -> Path:
    state = root / "state"
    (state / "secrets").mkdir(parents=True)
    (state / "secrets" / "cookie").write_bytes(os.urandom(32))
    (state / "egress").mkdir()
    (state / "egress" / "audit.jsonl").write_text('{"seq": 1}\n' * 10000)
    with sqlite3.connect(state / "egress" / "egress.db") as db:
        db.execute("create table t (id integer primary key, body text)")
        db.executemany("insert into t (body) values (?)", [("x" * 200,)] * 20000)
    homes = state / "projects" / "p1" / "homes" / "alice"
    homes.mkdir(parents=True)
    for i in range(mb):
        (homes / f"f{i:04d}.bin").write_bytes(os.urandom(1 << 20))
    return state


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="havre-backup-bench-") as tmp:
        root = Path(tmp)
        state = make_state(root, args.mb)
        config = root / "enclave.yaml"
        config.write_text("enclave: {name: bench}\n")
        identity = root / "id.key"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        public = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout
        recipients = root / "recipients"
        recipients.write_text(public)
        base = [sys.executable, str(TOOL), "create", "--state", str(state), "--config", str(config)]
        steps = ("create plain", "create age", "verify plain", "verify age")
        times: dict[str, list[float]] = {k: [] for k in steps}
        load_before = os.getloadavg()
        for run in range(args.runs):
            plain, sealed = root / f"p{run}.tar.gz", root / f"a{run}.tar.gz.age"
            order = [("plain", plain), ("age", sealed)]
            if run % 2:
                order.reverse()  # interleaved, alternating which goes first
            for kind, out in order:
                extra = (
                    ["--unencrypted"] if kind == "plain" else ["--recipients-file", str(recipients)]
                )
                times[f"create {kind}"].append(timed([*base, "--output", str(out), *extra]))
            for kind, out in order:
                extra = [] if kind == "plain" else ["--identity", str(identity)]
                times[f"verify {kind}"].append(
                    timed([sys.executable, str(TOOL), "verify", str(out), *extra])
                )
            sizes = {"plain": plain.stat().st_size, "age": sealed.stat().st_size}
            plain.unlink()
            sealed.unlink()
            Path(f"{plain}.sha256").unlink()
            Path(f"{sealed}.sha256").unlink()
    result = {
        "benchmark": "backup_encryption",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "mb": args.mb,
        "runs": args.runs,
        "archive_bytes": sizes,
        "seconds": {
            k: {"median": round(statistics.median(v), 3), "p95": round(p95(v), 3)}
            for k, v in times.items()
        },
        "ratio_median": {
            step: round(
                statistics.median(times[f"{step} age"]) / statistics.median(times[f"{step} plain"]),
                3,
            )
            for step in ("create", "verify")
        },
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "age": subprocess.run(
                ["age", "--version"], capture_output=True, text=True
            ).stdout.strip(),
        },
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
